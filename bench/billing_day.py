"""One billing day for 1,000 subscriptions end to end, through the pool as production runs it, and where its
time goes.

The stack is bench/capacity.py's (tests/support/loadstack.py): supervisord with every program of supervisord.conf
at its default process count (billing-usage 2 x 10 lanes under its 50 jobs/s limiter, billing-invoice 1 x 4,
billing-payment-sync 1 x 10), the real queue table and handlers, PostgreSQL, the identity and Stripe doubles.
The subscriptions (10 per organization, 1 in 4 on the growth plan, 1 in 100 with a card the Stripe double
declines) have a monthly period that ends today at 00:00 UTC and `--events` usage events each over that month.
The day, stage after stage, added as its producers add it:

1. rollups: `usage.aggregate` of yesterday, hourly, per subscription (the Node producer's end-of-day jobs);
2. invoices: `invoice.generate` of the month per subscription, under the renewal job id the previous invoice
   scheduled (`renewal-<sub>-<periodStart>`): rollups refreshed and priced, the invoice recorded at identity, its
   PDF rendered, a PaymentIntent created and confirmed at the Stripe double, the payment recorded, the next
   renewal scheduled;
3. payments: Stripe's webhook for each PaymentIntent (`payment_intent.succeeded` or `.payment_failed`, signed as
   Stripe signs them) as `payment.webhook` jobs: signature verified, the event applied once, the intent
   fetched again, the invoice's payment state set.

Per stage: wall time (first add -> last finishedOn), jobs/s, each job's own time (processedOn -> finishedOn) and
the lanes' occupancy (job time / (wall x lanes)); the CPU seconds of every part of the stack during it (the
stage's pool processes, PostgreSQL, the identity double, the Stripe double, Valkey, the other pool processes);
the requests each double counted and the PostgreSQL statements the pool counted, per job. And the bare reference
(bench/billing_bare.py), in the same run: the same handler functions with the same clients called by plain
asyncio tasks in this process (as many as the queue has lanes), on an equal set of fresh subscriptions, each
downstream call timed, so its job time splits into PostgreSQL, identity, Stripe, PDF rendering and the rest.
Each stage alternates pool and bare over `--rounds` parts of its subscriptions (pool, bare, pool, bare), so both
meet the same load from the rest of the machine and the same Stripe double. Printed as pool / bare
ratios: of wall time (the median of the rounds') and of CPU seconds (the stage's pool processes against this
process for the same work). The rollups' floor is also the billing-usage limiter's (jobs / 50 per second).
`--profile` adds py-spy's split of each stage's pool CPU by library (bench/spy.py).

Budget: none (information; issue 18, item 4).

    .venv/bin/python bench/billing_day.py [--subscriptions 1000] [--events 300] [--rounds 2] [--no-bare] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import spy
from bench.billing_bare import Bare
from bench.billing_day_jobs import invoice_jobs, prepare, rollup_jobs, webhook_jobs
from bench.billing_day_rounds import Round, bare_figures, bare_round, pool_figures, pool_round, statements
from handlers.billing import add_months
from pool.queue_table import QUEUES
from pool.runtime import run_on_loop
from tests.support.loadstack import LoadStack, load_stack
from tests.support.processes import pool_env

USAGE, INVOICE, SYNC = "billing-usage", "billing-invoice", "billing-payment-sync"
STAGES = (("rollups", USAGE), ("invoices", INVOICE), ("payments", SYNC))
SETTLE_S = 6.0
"""After a stage: the pool flushes its downstream counters with its heartbeat (every 5 s)."""
WARM = 4
"""Subscriptions run through every stage first, pool and bare, so no stage pays for first connections."""


# -- the day --------------------------------------------------------------------------------------------------------
def stage_jobs(
    stage: str, subs: list[str], earlier: list[Any], today: datetime, secret: str
) -> list[tuple[str, str, dict[str, Any]]]:
    if stage == "rollups":
        return rollup_jobs(subs, today)
    if stage == "invoices":
        return invoice_jobs(subs, add_months(today, -1), today)
    return webhook_jobs(earlier, secret)


async def measure(
    stack: LoadStack, subscriptions: int, events: int, rounds: int, with_bare: bool, home: Path, profile: bool
) -> dict[str, Any]:
    """Stage after stage; in each, the pool's and the bare's share of the subscriptions in `rounds` alternating
    parts (pool, bare, pool, ...), so both meet the same machine and the same growing Stripe double."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    sides = ("pool", "bare") if with_bare else ("pool",)
    sets = {side: (f"sub_bd_{side[0]}", subscriptions) for side in sides}
    sets |= {f"{side} warm-up": (f"sub_bd_{side[0]}w", WARM) for side in sides}
    began = time.monotonic()
    await prepare(stack.urls.admin, list(sets.values()), events, add_months(today, -1), today)
    print(
        f"  prepared {sorted(sets)}: {events} usage events each ({time.monotonic() - began:.0f} s)",
        file=sys.stderr,
    )
    subs = {name: [f"{prefix}{i}" for i in range(n)] for name, (prefix, n) in sets.items()}
    env = pool_env(
        stack.valkey.url,
        stack.urls,
        MA_QUEUE_TABLE="pool.queue_table:QUEUES",
        IDENTITY_BASE_URL=stack.identity.url,
        MA_INVOICE_DIR=str(home / "invoices-bare"),
        **stack.stripe.env(),
    )
    secret = stack.stripe.WEBHOOK_SECRET
    redis = stack.redis()
    out: dict[str, Any] = {}
    try:
        async with Bare(env, log=logging.getLogger("bench.billing_bare")) as bare:

            async def run(
                side: str, queue: str, jobs: list[tuple[str, str, dict[str, Any]]], spy_on: bool
            ) -> Round:
                if side.startswith("pool"):
                    return await pool_round(stack, redis, queue, jobs, spy_on)
                return await bare_round(stack, bare, queue, jobs)

            earlier: dict[str, list[Any]] = {}
            for side in sides:  # warm-up: first connections, tokens, prepared statements, caches
                for stage, queue in STAGES:
                    jobs = stage_jobs(stage, subs[f"{side} warm-up"], earlier.get(side, []), today, secret)
                    earlier[side] = (await run(side, queue, jobs, False)).results
            for stage, queue in STAGES:
                sql0 = await statements(redis)
                done: dict[str, list[Round]] = {side: [] for side in sides}
                todo = {
                    side: stage_jobs(stage, subs[side], earlier.get(side, []), today, secret)
                    for side in sides
                }
                for part in range(rounds):
                    for side in sides:
                        done[side].append(await run(side, queue, todo[side][part::rounds], profile))
                await asyncio.sleep(SETTLE_S)
                sql = await statements(redis) - sql0
                for side in sides:
                    earlier[side] = [x for r in done[side] for x in r.results]
                out[stage] = {"queue": queue, "pool": pool_figures(queue, done["pool"], sql)}
                if with_bare:
                    out[stage]["bare"] = bare_figures(done["bare"])
                    out[stage]["ratio_wall_rounds"] = [
                        round(p.wall_s / b.wall_s, 3) for p, b in zip(done["pool"], done["bare"], strict=True)
                    ]
                print(f"  {stage}: {json.dumps(out[stage])}", file=sys.stderr)
    finally:
        await redis.aclose()
    return out


def summary(stages: dict[str, Any], subscriptions: int, events: int, load: list[float]) -> dict[str, Any]:
    """`load`: the machine's 1-minute load average at the start and the end (other work on a shared machine)."""
    pool = {s: f["pool"] for s, f in stages.items()}
    day = sum(p["wall_s"] for p in pool.values())
    result: dict[str, Any] = {
        "benchmark": "billing day: rollups, invoices with PDFs, PaymentIntents and their webhooks, end to end",
        "subscriptions": subscriptions,
        "events_per_subscription": events,
        "day_wall_s": round(day, 1),
        "jobs": sum(p["jobs"] for p in pool.values()),
        "failed": sum(p["failed"] for p in pool.values()),
        "load_avg_1m": [round(x, 1) for x in load],
        "stages": stages,
    }
    limiter = QUEUES[USAGE].limiter
    if limiter:
        n, most = pool["rollups"]["jobs"], limiter["max"]  # the first window's `max` start at once
        result["rollups_limiter_floor_s"] = round(max(0, n - most) / most * limiter["duration"] / 1000, 1)
    for f in stages.values():
        if "bare" in f:
            f["ratio_wall"] = round(statistics.median(f["ratio_wall_rounds"]), 3)
            extra = f["pool"]["stage_pool_cpu_s"] - f["bare"]["bench_cpu_s"]
            f["pool_extra_cpu_ms_per_job"] = round(extra / f["pool"]["jobs"] * 1000, 2)
            f["ratio_cpu"] = (
                round(f["pool"]["stage_pool_cpu_s"] / f["bare"]["bench_cpu_s"], 3)
                if f["bare"]["bench_cpu_s"]
                else None
            )
    result["ok"] = result["failed"] == 0 and all(
        f.get("bare", {}).get("failed", 0) == 0 for f in stages.values()
    )
    return result


def print_table(r: dict[str, Any]) -> None:
    print(
        f"billing day, {r['subscriptions']} subscriptions ({r['events_per_subscription']} usage events each): "
        f"{r['day_wall_s']} s, {r['jobs']} jobs, {r['failed']} failed (load average {r['load_avg_1m']})"
    )
    for stage, f in r["stages"].items():
        p = f["pool"]
        print(
            f"{stage:9} {f['queue']:21} {p['jobs']:>5} jobs {p['wall_s']:>7} s {p['jobs_per_s']:>7} jobs/s"
            f"  job p50 {p['job_ms_p50']} ms p95 {p['job_ms_p95']} ms, lanes {p['lanes']} busy {p['occupancy']:.0%}"
        )
        print(
            f"{'':9} CPU s: "
            + ", ".join(f"{k} {v}" for k, v in p["cpu_s"].items())
            + f"; machine busy {p['machine_busy']:.0%}"
        )
        print(
            f"{'':9} per job: SQL {p['sql_per_job']}, "
            + "; ".join(
                f"{d} " + ", ".join(f"{k} {v}" for k, v in c.items())
                for d, c in p["requests_per_job"].items()
                if c
            )
        )
        if "cpu_profile" in p:
            print(
                f"{'':9} pool CPU (py-spy): " + ", ".join(f"{k} {v:.0%}" for k, v in p["cpu_profile"].items())
            )
        if "bare" in f:
            b = f["bare"]
            shares = ", ".join(f"{k} {v:.0%}" for k, v in b["share_of_job_time"].items())
            print(
                f"{'':9} bare: {b['wall_s']} s {b['jobs_per_s']} jobs/s, CPU {b['bench_cpu_s']} s (stack: "
                + ", ".join(f"{k} {v}" for k, v in b["cpu_s"].items())
                + "); pool/bare wall "
                f"{f['ratio_wall']}x, CPU {f['ratio_cpu']}x (pool - bare: {f['pool_extra_cpu_ms_per_job']} ms a job); "
                "bare job time: "
                f"{shares}"
            )
    if "rollups_limiter_floor_s" in r:
        print(f"rollups: the billing-usage limiter alone needs {r['rollups_limiter_floor_s']} s")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscriptions", type=int, default=1_000)
    parser.add_argument(
        "--events", type=int, default=300, help="usage events per subscription over its month"
    )
    parser.add_argument("--rounds", type=int, default=2, help="parts each stage alternates pool and bare in")
    parser.add_argument("--no-bare", action="store_true", help="the pool only, no bare reference")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy samples of each stage's pool processes (bench/spy.py)"
    )
    args = parser.parse_args()
    if args.profile and not spy.executable():
        print("--profile: py-spy is not installed (pip install py-spy); running without it", file=sys.stderr)
        args.profile = False
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the stack on the way out
    home = Path(tempfile.mkdtemp(prefix="ma-billing-day-"))
    stages: dict[str, Any] = {}

    async def run(stack: LoadStack) -> int:
        stages.update(
            await measure(
                stack, args.subscriptions, args.events, args.rounds, not args.no_bare, home, args.profile
            )
        )
        return 0

    load = os.getloadavg()[0]
    with load_stack(home) as stack:
        run_on_loop(run(stack), "uvloop")  # the pool's loop (MA_EVENT_LOOP's default), for the bare side too
    result = summary(stages, args.subscriptions, args.events, [load, os.getloadavg()[0]])
    print_table(result)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
