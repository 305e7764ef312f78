"""ma-top's refresh cost: one tick (the snapshot's fetch and the findings made of it, with the history kept
across ticks, as ma-top and the exporter do) with a 1,000,000-job queue vs empty queues, and ma-top's CPU.

Budgets (issue: ma-top): tick ratio (1M / empty) <= 1.2, median tick <= 5 ms for all 7 queues;
ma-top CPU at a 1 s refresh <= 5 % of a core.

    .venv/bin/python bench/top_tick.py [--jobs 1000000] [--ticks 200] [--cpu-seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bullmq import Queue
from redis.asyncio import Redis

from devstack import engines
from pool.monitor.collector import Collector
from pool.monitor.findings import History, findings

QUEUES = [
    "identity-events",
    "user-management-jobs",
    "task-notifications",
    "super-admin.bulk-job",
    "billing-usage",
    "billing-invoice",
    "billing-payment-sync",
]
BUDGET_RATIO, BUDGET_MS, BUDGET_CPU = 1.2, 5.0, 0.05


async def ticks(collectors: list[Collector], n: int) -> tuple[list[list[float]], list[int]]:
    """`n` ticks of each collector, interleaved tick by tick (this machine's speed drifts: both sides share it).
    A tick is what ma-top's refresh does: fetch the snapshot, then make the findings of it."""
    histories = [History() for _ in collectors]
    for collector, history in zip(collectors, histories, strict=True):
        findings(await collector.fetch(), history)  # discovery + INFO: their own slower timers
    out: list[list[float]] = [[] for _ in collectors]
    found = [0 for _ in collectors]
    for i in range(n):
        for k in range(len(collectors)) if i % 2 == 0 else reversed(range(len(collectors))):
            started = time.perf_counter()
            found[k] = len(findings(await collectors[k].fetch(), histories[k]))
            out[k].append((time.perf_counter() - started) * 1000)
    return out, found


async def fill(redis: Redis, queue: str, jobs: int) -> None:
    q = Queue(queue, {"connection": redis})
    batch = 5000
    for start in range(0, jobs, batch):
        await q.addBulk(
            [
                {"name": "usage.aggregate", "data": {"organizationId": "org_acme", "n": i}}
                for i in range(start, min(jobs, start + batch))
            ]
        )
        if start % 100_000 == 0:
            print(f"  filled {start:,}", file=sys.stderr)


async def top_cpu(redis: Redis, seconds: float) -> float:
    from tui.app import MaTop

    app = MaTop(redis, [], refresh_s=1.0, journal_path=Path(tempfile.mkdtemp()) / "audit.log")
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause(3)  # settle: first render, discovery
        cpu, wall = time.process_time(), time.perf_counter()
        await pilot.pause(seconds)
        return (time.process_time() - cpu) / (time.perf_counter() - wall)


async def main(jobs: int, n: int, cpu_seconds: float) -> dict:
    """Two Valkeys of the same build: one with the 7 queues empty, one with `jobs` waiting in billing-usage."""
    work = Path(tempfile.mkdtemp(prefix="ma-bench-top-"))
    valkeys = [engines.valkey(work / name, persistent=False).start() for name in ("empty", "full")]
    clients = [Redis.from_url(v.url, decode_responses=True) for v in valkeys]
    try:
        for redis in clients:
            for q in QUEUES:
                await Queue(q, {"connection": redis}).add("seed", {})  # every queue exists (meta keys)
        await fill(clients[1], "billing-usage", jobs)
        (empty, full), found = await ticks([Collector(redis, QUEUES) for redis in clients], n)
        cpu = await top_cpu(clients[1], cpu_seconds)
    finally:
        for redis, valkey in zip(clients, valkeys, strict=True):
            await redis.aclose()
            valkey.stop()
    return {
        "benchmark": "ma-top tick",
        "jobs": jobs,
        "ticks": n,
        "empty_median_ms": round(statistics.median(empty), 3),
        "full_median_ms": round(statistics.median(full), 3),
        "ratio": round(statistics.median(full) / statistics.median(empty), 3),
        "findings_empty": found[0],
        "findings_full": found[1],
        "budget_ratio": BUDGET_RATIO,
        "budget_ms": BUDGET_MS,
        "top_cpu_fraction": round(cpu, 4),
        "budget_cpu": BUDGET_CPU,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--ticks", type=int, default=200)
    parser.add_argument("--cpu-seconds", type=float, default=20.0)
    args = parser.parse_args()
    r = asyncio.run(main(args.jobs, args.ticks, args.cpu_seconds))
    ok = (
        r["ratio"] <= BUDGET_RATIO
        and r["full_median_ms"] <= BUDGET_MS
        and r["top_cpu_fraction"] <= BUDGET_CPU
    )
    print(f"tick, 7 queues empty     : {r['empty_median_ms']:.3f} ms (median of {r['ticks']})")
    print(f"tick, {r['jobs']:,} jobs   : {r['full_median_ms']:.3f} ms (budget <= {BUDGET_MS} ms)")
    print(f"ratio                    : {r['ratio']:.3f} (budget <= {BUDGET_RATIO})")
    print(
        f"findings per tick        : {r['findings_empty']} empty, {r['findings_full']} full (made every tick)"
    )
    print(f"ma-top CPU at 1 s refresh: {r['top_cpu_fraction'] * 100:.1f} % of a core (budget <= 5 %)")
    print(("within" if ok else "OVER") + " budget")
    print(json.dumps(r))
    sys.exit(0 if ok else 1)
