"""The pool's capacity on this machine for a realistic mix: the max drain rate of a pre-filled mixed backlog.

The whole stack as production runs it: supervisord with every program of supervisord.conf at its default process
count, the real queue table and handlers, PostgreSQL, the identity and Stripe doubles. The mix
(tests/support/mix.py) holds every job name of the queue table, weighted as production sees them. Every queue is
paused, the backlog added (bullmq addBulk), then every queue resumed at once; the backlog is sampled until it is
empty. Per queue: its jobs / the time its backlog took to empty (queues drain side by side, so this is each
queue's rate while sharing the machine); total: all jobs / the time until every queue was empty, and the rate
over the first 80 % of the jobs (before the slowest queue's tail). This is the figure the chaos suite's load
rate is a fraction of (MA_CHAOS_LOAD_RATE, tests/support/chaos.py) and the soak's length is estimated from.

    .venv/bin/python bench/capacity.py [--jobs 6000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bullmq import Queue

from pool.queue_table import QUEUES
from tests.support.loadstack import LoadStack, add_jobs, backlog, load_stack, paid_invoice
from tests.support.mix import Mix, batches


async def failed_counts(stack: LoadStack) -> dict[str, int]:
    redis = stack.redis()
    try:
        return {q: await redis.zcard(f"bull:{q}:failed") for q in QUEUES}
    finally:
        await redis.aclose()


async def measure(stack: LoadStack, jobs: int) -> dict:
    mix = Mix(seed=5)
    await mix.prepare(stack.urls.admin)
    mix.invoice = await paid_invoice(stack.valkey.url, stack.urls.admin, mix)
    redis = stack.redis()
    queues = [Queue(q, {"connection": redis}) for q in QUEUES]
    try:
        for q in queues:
            await q.pause()
        per_queue: dict[str, int] = dict.fromkeys(QUEUES, 0)
        for batch in batches(mix, jobs):
            await mix.insert_rows(stack.urls.admin)
            await add_jobs(redis, batch)
            for job in batch:
                per_queue[job["queue"]] += 1
        failed_before = await failed_counts(stack)
        start_backlog = sum((await backlog(redis)).values())
        started = time.monotonic()
        for q in queues:
            await q.resume()
        emptied: dict[str, float] = {}
        at_80: float | None = None
        while len(emptied) < len(QUEUES):
            now = await backlog(redis)
            t = time.monotonic() - started
            for q, n in now.items():
                if n == 0 and q not in emptied:
                    emptied[q] = t
            if at_80 is None and sum(now.values()) <= 0.2 * start_backlog:
                at_80 = t
            assert t < 1800, f"backlog not drained after 30 min: {now}"
            await asyncio.sleep(0.2)
        total_s = max(emptied.values())
        failed_after = await failed_counts(stack)
    finally:
        await redis.aclose()
    failed = {q: failed_after[q] - failed_before[q] for q in QUEUES}
    return {
        "benchmark": "pool capacity, realistic mix",
        "jobs": jobs,
        "job_names": len(mix.names),
        "jobs_per_s": round(jobs / total_s, 1),
        "jobs_per_s_first_80pct": round(0.8 * start_backlog / at_80, 1) if at_80 else None,
        "drain_s": round(total_s, 1),
        "failed": sum(failed.values()),
        "per_queue": {
            q: {
                "jobs": per_queue[q],
                "drain_s": round(emptied[q], 1),
                "jobs_per_s": round(per_queue[q] / emptied[q], 1) if emptied[q] else None,
                "failed": failed[q],
            }
            for q in QUEUES
        },
        "processes": {q: spec.processes for q, spec in QUEUES.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=6_000)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the stack on the way out
    home = Path(tempfile.mkdtemp(prefix="ma-capacity-"))
    with load_stack(home) as stack:
        result = asyncio.run(measure(stack, args.jobs))
    for q, r in result["per_queue"].items():
        print(
            f"{q:24} {r['jobs']:>6} jobs in {r['drain_s']:>6} s: {r['jobs_per_s']} jobs/s, {r['failed']} failed"
        )
    print(
        f"total: {result['jobs_per_s']} jobs/s ({result['jobs']} jobs in {result['drain_s']} s; "
        f"{result['jobs_per_s_first_80pct']} jobs/s over the first 80 %), {result['failed']} failed"
    )
    result["ok"] = result["failed"] == 0
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
