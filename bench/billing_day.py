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
import contextlib
import json
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg
import psutil
from bullmq import Queue
from redis.asyncio import Redis

from bench import spy
from bench.billing_bare import COMPONENTS, Bare, BareRun
from handlers.billing import add_months, iso
from handlers.billing_invoice import renewal_job_id
from pool.contracts import bull_key, downstream_scope, stats_key
from pool.queue_table import QUEUES
from pool.runtime import run_on_loop
from tests.support.billing import signed
from tests.support.loadstack import LoadStack, cpu_seconds, load_stack
from tests.support.processes import pool_env

USAGE, INVOICE, SYNC = "billing-usage", "billing-invoice", "billing-payment-sync"
STAGES = (("rollups", USAGE), ("invoices", INVOICE), ("payments", SYNC))
SETTLE_S = 6.0
"""After a stage: the pool flushes its downstream counters with its heartbeat (every 5 s)."""
TIMEOUT_S = 1800.0
WARM = 4
"""Subscriptions run through every stage first, pool and bare, so no stage pays for first connections."""


# -- the subscriptions and their usage ------------------------------------------------------------------------------
EVENTS_SQL = """
    INSERT INTO usage_events (organization_id, subscription_id, feature, quantity, occurred_at)
    SELECT 'org_bd_' || (s / 10), $1 || s, (ARRAY['ai.tokens', 'storage.gb', 'api.calls'])[1 + (s + e) % 3],
           CASE (s + e) % 3 WHEN 0 THEN 100 + (s * 7919 + e * 104729) % 20000 WHEN 1 THEN 1 + e % 3
                ELSE 1 + (s + e * 31) % 200 END,
           $2::timestamptz + make_interval(secs => ((s::bigint * 2654435761 + e * 40503) % 1000003)
                                                   / 1000003.0 * $4)
    FROM generate_series(0, $3 - 1) s, generate_series(0, $5 - 1) e
"""


async def prepare(
    admin_url: str, prefixes: list[tuple[str, int]], events: int, start: datetime, end: datetime
) -> None:
    """Organizations, subscriptions (`<prefix><i>`) and their usage events; subscription i of every prefix gets the
    same plan, card and events."""
    conn = await asyncpg.connect(admin_url)
    try:
        orgs = max(n for _, n in prefixes) // 10 + 1
        await conn.execute(
            "INSERT INTO organizations (id, name, slug) SELECT 'org_bd_' || g, 'Billing day ' || g, 'bd-' || g"
            " FROM generate_series(0, $1 - 1) g ON CONFLICT DO NOTHING",
            orgs,
        )
        for prefix, n in prefixes:
            await conn.execute(
                "INSERT INTO subscriptions (id, organization_id, plan_id, current_period_start, current_period_end,"
                " stripe_customer_id, stripe_payment_method) SELECT $1 || g, 'org_bd_' || (g / 10),"
                " CASE WHEN g % 4 = 0 THEN 'plan_growth' ELSE 'plan_starter' END, $2, $3, 'cus_bd_' || g,"
                " CASE WHEN g % 100 = 99 THEN 'pm_card_chargeCustomerFail' ELSE 'pm_card_visa' END"
                " FROM generate_series(0, $4 - 1) g",
                prefix,
                start,
                end,
                n,
            )
            await conn.execute(EVENTS_SQL, prefix, start, n, (end - start).total_seconds(), events)
        await conn.execute("VACUUM ANALYZE usage_events")
    finally:
        await conn.close()


# -- each stage's jobs, as (job id, name, data) ---------------------------------------------------------------------
def rollup_jobs(subs: list[str], today: datetime) -> list[tuple[str, str, dict[str, Any]]]:
    day = today - timedelta(days=1)
    return [
        (
            f"usage-{sub}-{day:%Y%m%d}",
            "usage.aggregate",
            {
                "organizationId": org_of(sub),
                "subscriptionId": sub,
                "periodStart": iso(day),
                "periodEnd": iso(today),
                "resolution": "hourly",
            },
        )
        for sub in subs
    ]


def invoice_jobs(subs: list[str], start: datetime, end: datetime) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (
            renewal_job_id(sub, start),
            "invoice.generate",
            {
                "organizationId": org_of(sub),
                "subscriptionId": sub,
                "periodStart": iso(start),
                "periodEnd": iso(end),
            },
        )
        for sub in subs
    ]


def webhook_jobs(invoices: list[Any], secret: str) -> list[tuple[str, str, dict[str, Any]]]:
    """The webhook Stripe sends for each invoice's PaymentIntent, as the Node receiver forwards it."""
    jobs = []
    for result in invoices:
        intent = result.get("paymentIntentId") if isinstance(result, dict) else None
        if not intent:
            continue
        paid = result["paymentStatus"] == "paid"
        event = {
            "id": f"evt_{intent}",
            "object": "event",
            "type": "payment_intent.succeeded" if paid else "payment_intent.payment_failed",
            "data": {
                "object": {"id": intent, "object": "payment_intent", "status": "succeeded" if paid else ""}
            },
        }
        body, signature = signed(secret, event)
        jobs.append(
            (
                f"stripe-{event['id']}",
                "payment.webhook",
                {
                    "stripeEventId": event["id"],
                    "type": event["type"],
                    "payload": body,
                    "signature": signature,
                },
            )
        )
    return jobs


def org_of(sub: str) -> str:
    return f"org_bd_{int(sub[len(sub.rstrip('0123456789')) :]) // 10}"  # subscription i is in organization i // 10


# -- the pool's side ------------------------------------------------------------------------------------------------
async def add(redis: Redis, queue: str, jobs: list[tuple[str, str, dict[str, Any]]]) -> None:
    """bullmq addBulk with the queue's options, as `ma-worker enqueue` and the Node producers add them; completed
    jobs are kept (not the queue's 1,000) for their timings."""
    q = Queue(queue, {"connection": redis})
    opts = {**QUEUES[queue].job_options(), "removeOnComplete": False}
    for at in range(0, len(jobs), 500):
        await q.addBulk(
            [
                {"name": name, "data": data, "opts": {**opts, "jobId": job_id}}
                for job_id, name, data in jobs[at : at + 500]
            ]
        )


async def finished(redis: Redis, queue: str, ids: list[str]) -> dict[str, list[Any]]:
    """id -> [processedOn, finishedOn, failedReason, returnvalue] once every job has finished (or the timeout)."""
    done: dict[str, list[Any]] = {}
    deadline = time.monotonic() + TIMEOUT_S
    while len(done) < len(ids):
        todo = [i for i in ids if i not in done]
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in todo:
                pipe.hmget(
                    bull_key(queue, job_id), "processedOn", "finishedOn", "failedReason", "returnvalue"
                )
            rows = await pipe.execute()
        for job_id, row in zip(todo, rows, strict=True):
            if row[1]:
                done[job_id] = row
        if len(done) < len(ids):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{queue}: {len(ids) - len(done)} job(s) not finished after {TIMEOUT_S:.0f} s"
                )
            await asyncio.sleep(0.25)
    return done


async def requests(stack: LoadStack) -> dict[str, Counter[str]]:
    stats = await asyncio.gather(
        asyncio.to_thread(stack.identity.stats), asyncio.to_thread(stack.stripe.stats)
    )
    return {"identity": Counter(stats[0]), "stripe": Counter(stats[1])}


async def statements(redis: Redis) -> int:
    return sum(int(v) for v in (await redis.hgetall(stats_key(downstream_scope("postgres")))).values())


METHODS = ("GET ", "POST ", "PUT ", "PATCH ", "DELETE ")


def per_job(counter: Counter[str], jobs: int) -> dict[str, float]:
    """Requests per route, per job (the doubles also count statuses and effects; only requests here)."""
    return {k: round(v / jobs, 2) for k, v in sorted(counter.items()) if v and k.startswith(METHODS)}


def pctl(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def stack_cpu(stack: LoadStack) -> dict[str, float]:
    """cpu_seconds of the stack, and of this process (the bare side; on the pool's side, its polling)."""
    me = psutil.Process().cpu_times()
    return {**cpu_seconds(stack), "bench process": me.user + me.system}


@dataclass
class Round:
    """One side's part of a stage in one round: what it cost every part of the stack."""

    jobs: int
    wall_s: float
    cpu: dict[str, float]
    requests: dict[str, Counter[str]]
    results: list[Any]
    failed: list[str]
    times: list[float] = field(default_factory=list)
    """The pool's job times (processedOn -> finishedOn)."""
    profile: Counter[str] = field(default_factory=Counter)
    bare: BareRun | None = None


class Watch:
    """CPU seconds of every part of the stack and the doubles' request counts, over one stretch."""

    def __init__(self, stack: LoadStack) -> None:
        self.stack = stack

    async def start(self) -> None:
        self.cpu0, self.req0 = stack_cpu(self.stack), await requests(self.stack)

    def stop_cpu(self) -> dict[str, float]:
        return {k: v - self.cpu0.get(k, 0.0) for k, v in stack_cpu(self.stack).items()}

    async def stop_requests(self) -> dict[str, Counter[str]]:
        return {d: c - self.req0[d] for d, c in (await requests(self.stack)).items()}


async def pool_round(
    stack: LoadStack, redis: Redis, queue: str, jobs: list[tuple[str, str, dict[str, Any]]], profile: bool
) -> Round:
    watch = Watch(stack)
    await watch.start()
    pids = [p["pid"] for p in stack.sup.processes() if p["group"] == queue and p["pid"]]
    sampling = spy.Sampling(pids, stack.home, f"{queue}-{time.time_ns()}") if profile else None
    started = time.time()
    with sampling or contextlib.nullcontext():
        await add(redis, queue, jobs)
        rows = await finished(redis, queue, [job_id for job_id, _, _ in jobs])
        cpu = watch.stop_cpu()
    return Round(
        len(jobs),
        max(int(r[1]) for r in rows.values()) / 1000 - started,
        cpu,
        await watch.stop_requests(),
        [json.loads(r[3]) if r[3] else None for r in rows.values()],
        [f"{i}: {r[2]}" for i, r in rows.items() if r[2] and not r[3]],
        times=[(int(r[1]) - int(r[0])) / 1000 for r in rows.values() if r[0]],
        profile=sampling.counts() if sampling else Counter(),
    )


async def bare_round(
    stack: LoadStack, bare: Bare, queue: str, jobs: list[tuple[str, str, dict[str, Any]]]
) -> Round:
    watch = Watch(stack)
    await watch.start()
    spec = QUEUES[queue]
    run = await bare.run(spec, jobs, spec.concurrency * spec.processes)
    cpu = watch.stop_cpu()
    return Round(len(jobs), run.wall_s, cpu, await watch.stop_requests(), run.results, run.failed, bare=run)


def common(rounds: list[Round]) -> dict[str, Any]:
    """What both sides report: time, jobs/s, CPU of every part of the stack, requests per job."""
    n, wall = sum(r.jobs for r in rounds), sum(r.wall_s for r in rounds)
    cpu: Counter[str] = Counter()
    req: dict[str, Counter[str]] = {}
    for r in rounds:
        cpu.update(r.cpu)
        for d, c in r.requests.items():
            req.setdefault(d, Counter()).update(c)
    failed = [f for r in rounds for f in r.failed]
    return {
        "jobs": n,
        "wall_s": round(wall, 2),
        "jobs_per_s": round(n / wall, 1),
        "failed": len(failed),
        "failed_sample": failed[:3],
        "cpu_s": {k: round(v, 2) for k, v in cpu.most_common() if v >= 0.05},
        "machine_busy": round(sum(cpu.values()) / (wall * (psutil.cpu_count() or 1)), 3),
        "requests_per_job": {d: per_job(c, n) for d, c in req.items()},
    }


def pool_figures(queue: str, rounds: list[Round], sql: int) -> dict[str, Any]:
    spec, times = QUEUES[queue], [t for r in rounds for t in r.times]
    lanes, wall = spec.concurrency * spec.processes, sum(r.wall_s for r in rounds)
    profile: Counter[str] = sum((r.profile for r in rounds), Counter())
    out = {
        **common(rounds),
        "job_ms_p50": round(statistics.median(times) * 1000, 1),
        "job_ms_p95": round(pctl(times, 0.95) * 1000, 1),
        "lanes": lanes,
        "occupancy": round(sum(times) / (wall * lanes), 3),
        "stage_pool_cpu_s": round(sum(r.cpu.get(queue, 0.0) for r in rounds), 2),
        "sql_per_job": round(sql / sum(r.jobs for r in rounds), 2),
    }
    return out | ({"cpu_profile": spy.shares(profile)} if profile else {})


def bare_figures(rounds: list[Round]) -> dict[str, Any]:
    runs = [r.bare for r in rounds if r.bare is not None]
    n, busy = sum(r.jobs for r in rounds), sum(r.busy_s for r in runs)
    seconds = {c: sum(r.seconds.get(c, 0.0) for r in runs) for c in COMPONENTS}
    shares = {c: round(seconds[c] / busy, 3) for c in COMPONENTS}
    return {
        **common(rounds),
        "job_ms_mean": round(busy / n * 1000, 1),
        "bench_cpu_s": round(sum(r.cpu.get("bench process", 0.0) for r in rounds), 2),
        "share_of_job_time": {**shares, "rest": round(1 - sum(shares.values()), 3)},
        "calls_per_job": {c: round(sum(r.calls.get(c, 0) for r in runs) / n, 2) for c in COMPONENTS},
    }


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
