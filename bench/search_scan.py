"""Searching failed jobs with a data filter (pool/monitor/search.py) against the floor of any such scan: reading
the same jobs' hashes with a bare pipelined HGETALL loop (ids newest first in the same batches), in the same run.

And ma-top's tick (the snapshot's fetch and its findings, on the same client and event loop, as ma-top runs them)
while a search scans those jobs, against the tick without one, interleaved in the same run.

Budgets (issue 15): search jobs/s >= 0.7 x the bare loop's; the tick during a scan <= 1.2 x the tick without.

    .venv/bin/python bench/search_scan.py [--jobs 100000] [--rounds 3] [--ticks 100]
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
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis.asyncio import Redis

from devstack import engines
from pool.contracts import bull_key
from pool.monitor.collector import Collector
from pool.monitor.filters import parse
from pool.monitor.findings import History, findings
from pool.monitor.search import search
from pool.monitor.source import LiveSource

Q = "billing-invoice"
EXPR = "data.organizationId=org_7 reason~timeout"
BUDGET = 0.7
BUDGET_TICK = 1.2
QUEUES = [
    "identity-events",
    "user-management-jobs",
    "task-notifications",
    "super-admin.bulk-job",
    "billing-usage",
    "billing-invoice",
    "billing-payment-sync",
]
BATCH = 500


async def fill(redis: Redis, jobs: int) -> None:
    """Failed jobs as BullMQ leaves them: the job hash (name, data, opts, timestamps, attempts, reason, trace)
    and the id in `failed` scored by finishedOn. Written directly: this measures reading, not producing."""
    now = int(time.time() * 1000)
    for start in range(0, jobs, 5000):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(jobs, start + 5000)):
                data = {"organizationId": f"org_{i % 37}", "invoiceId": f"in_{i}", "amount": i % 1000}
                reason = "ReadTimeout: identity timed out after 5s" if i % 3 == 0 else "CardError: declined"
                pipe.hset(
                    bull_key(Q, str(i)),
                    mapping={
                        "name": "invoice.generate",
                        "data": json.dumps(data),
                        "opts": '{"attempts":5,"backoff":{"type":"exponential","delay":1000}}',
                        "timestamp": now - 60_000,
                        "processedOn": now - 1000,
                        "finishedOn": now - i,
                        "atm": 5,
                        "ats": 5,
                        "failedReason": reason,
                        "stacktrace": json.dumps(
                            [f'Traceback ...\n  File "handlers/x.py", line {i % 90}\n{reason}']
                        ),
                    },
                )
                pipe.zadd(bull_key(Q, "failed"), {str(i): now - i})
            await pipe.execute()


async def bare(redis: Redis, jobs: int) -> float:
    started = time.perf_counter()
    for offset in range(0, jobs, BATCH):
        ids = cast(list[str], await redis.zrevrange(bull_key(Q, "failed"), offset, offset + BATCH - 1))
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(bull_key(Q, job_id))
            await pipe.execute()
    return jobs / (time.perf_counter() - started)


async def searched(redis: Redis, jobs: int) -> tuple[float, int]:
    started = time.perf_counter()
    result = await search(redis, Q, ["failed"], parse(EXPR), cap=jobs, batch=BATCH)
    assert result.scanned["failed"] == jobs and not result.capped["failed"], result.summary
    return jobs / (time.perf_counter() - started), len(result.matches)


async def tick_times(source: LiveSource, history: History, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        findings(await source.fetch(), history)
        out.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.005)  # ticks are apart in ma-top; the scan runs in between
    return out


async def ticks_during_scan(source: LiveSource, history: History, n: int, jobs: int) -> list[float]:
    """The same ticks while searches scan every failed job, one after another, through ma-top's own source
    (the same client and loop, and its batches)."""
    scans = 0

    async def scanning() -> None:
        nonlocal scans
        while True:
            await source.search(Q, ["failed"], EXPR, cap=jobs)
            scans += 1

    task = asyncio.create_task(scanning())
    await asyncio.sleep(0.05)  # the scan under way
    try:
        return await tick_times(source, history, n)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def main(jobs: int, rounds: int, n_ticks: int = 100) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="ma-bench-search-"))
    valkey = engines.valkey(work / "valkey", persistent=False).start()
    redis = Redis.from_url(valkey.url, decode_responses=True)
    try:
        for q in QUEUES:  # every queue of the table exists, as ma-top would see them
            await redis.hset(bull_key(q, "meta"), mapping={"opts.maxLenEvents": 10000})
        await fill(redis, jobs)
        source, history = LiveSource(redis, collector=Collector(redis, QUEUES)), History()
        findings(await source.fetch(), history)  # discovery + INFO: their own slower timers
        quiet, busy = [], []
        for i in range(rounds):
            if i % 2 == 0:
                quiet += await tick_times(source, history, n_ticks)
                busy += await ticks_during_scan(source, history, n_ticks, jobs)
            else:
                busy += await ticks_during_scan(source, history, n_ticks, jobs)
                quiet += await tick_times(source, history, n_ticks)
        bare_rates, search_rates, matched = [], [], 0
        for i in range(rounds):  # interleaved, order alternating: this machine's speed drifts
            order = (bare, searched) if i % 2 == 0 else (searched, bare)
            for run in order:
                if run is bare:
                    bare_rates.append(await bare(redis, jobs))
                else:
                    rate, matched = await searched(redis, jobs)
                    search_rates.append(rate)
    finally:
        await redis.aclose()
        valkey.stop()
    ratio = statistics.median(search_rates) / statistics.median(bare_rates)
    return {
        "benchmark": "search scan",
        "jobs": jobs,
        "expression": EXPR,
        "matched": matched,
        "bare_hgetall_jobs_per_s": round(statistics.median(bare_rates)),
        "search_jobs_per_s": round(statistics.median(search_rates)),
        "ratio": round(ratio, 3),
        "budget_ratio": BUDGET,
        "tick_median_ms": round(statistics.median(quiet), 3),
        "tick_during_scan_median_ms": round(statistics.median(busy), 3),
        "tick_ratio": round(statistics.median(busy) / statistics.median(quiet), 3),
        "budget_tick_ratio": BUDGET_TICK,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ticks", type=int, default=100)
    args = parser.parse_args()
    r = asyncio.run(main(args.jobs, args.rounds, args.ticks))
    print(f"bare pipelined HGETALL: {r['bare_hgetall_jobs_per_s']:,} jobs/s")
    print(f"search `{EXPR}`: {r['search_jobs_per_s']:,} jobs/s, {r['matched']:,} matched")
    print(f"ratio: {r['ratio']:.3f} (budget >= {BUDGET})")
    print(
        f"ma-top tick: {r['tick_median_ms']:.3f} ms, during a scan {r['tick_during_scan_median_ms']:.3f} ms: "
        f"ratio {r['tick_ratio']:.3f} (budget <= {BUDGET_TICK})"
    )
    ok = r["ratio"] >= BUDGET and r["tick_ratio"] <= BUDGET_TICK
    print(("within" if ok else "UNDER") + " budget")
    print(json.dumps(r))
    sys.exit(0 if ok else 1)
