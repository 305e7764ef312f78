"""Pool dispatch overhead: jobs/s of our full dispatch vs a raw bullmq.Worker, same Redis, same run.

Both workers get the same options and the same pooled connection setup, so the ratio isolates what
pool/dispatch.py adds per job (payload validation, context, log line, telemetry). Budget: ratio >= 0.9.

    .venv/bin/python bench/throughput.py [--jobs 5000] [--rounds 12] [--concurrency 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bullmq import Queue, Worker  # noqa: E402
from pydantic import BaseModel  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from devstack import engines  # noqa: E402
from handlers.context import JobContext, Resources  # noqa: E402
from pool.connection import pooled_redis  # noqa: E402
from pool.dispatch import Dispatcher  # noqa: E402
from pool.logs import setup_logging  # noqa: E402
from pool.queue_table import QueueSpec  # noqa: E402
from pool.telemetry import Telemetry  # noqa: E402

BUDGET = 0.9


class NoopPayload(BaseModel):
    organizationId: str  # noqa: N815 - the producers' camelCase
    n: int


async def noop(ctx: JobContext, payload: NoopPayload) -> None:
    return None


async def raw_processor(job, token):  # noqa: ANN001 - bullmq's processor shape
    return None


async def fill(url: str, queue: str, jobs: int) -> None:
    redis = pooled_redis(url, max_connections=4)
    q = Queue(queue, {"connection": redis})
    for start in range(0, jobs, 1000):
        await q.addBulk([{"name": "bench.noop", "data": {"organizationId": "org_acme", "n": i},
                          "opts": {"removeOnComplete": True}} for i in range(start, min(jobs, start + 1000))])  # fmt: skip
    await redis.aclose()


async def drain(url: str, queue: str, processor, opts: dict, jobs: int) -> tuple[float, float]:  # noqa: ANN001
    """Run a worker until `jobs` completed: (jobs per wall second, CPU microseconds per job in this process)."""
    redis = pooled_redis(url, max_connections=opts["concurrency"] + 6)
    done = asyncio.Event()
    count = 0

    def completed(*_: object) -> None:
        nonlocal count
        count += 1
        if count >= jobs:
            done.set()

    started, cpu = time.perf_counter(), time.process_time()
    worker = Worker(queue, processor, {**opts, "connection": redis})
    worker.on("completed", completed)
    await done.wait()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await worker.close()
    await redis.aclose()
    return jobs / elapsed, cpu * 1e6 / jobs


async def main(jobs: int, rounds: int, concurrency: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="ma-bench-"))
    valkey = engines.valkey(tmp / "valkey", persistent=False).start()
    devnull = open(os.devnull, "w")  # noqa: SIM115
    setup_logging(["bench-service-role-key"])  # production always has secrets to scrub
    logging.getLogger().handlers[0].setStream(devnull)  # format every line as in production, write nowhere
    spec = replace(QueueSpec("bench-pool", {"bench.noop": noop}, concurrency=concurrency))
    opts = {k: v for k, v in spec.worker_options().items() if k not in ("removeOnComplete", "removeOnFail")}
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:9/none")  # never connected
    telemetry = Telemetry("bench-pool", "bench", concurrency)
    redis_for_ctx = pooled_redis(valkey.url, max_connections=2)
    dispatcher = Dispatcher(spec, Resources(None, redis_for_ctx, engine, engine, telemetry.event), telemetry)
    raw: list[float] = []
    ours: list[float] = []
    cpu: dict[str, list[float]] = {"raw": [], "pool": []}
    try:
        for i in range(rounds):  # alternate who goes first: neither side always gets the warmer machine
            order = [("raw", raw_processor, raw), ("pool", dispatcher, ours)]
            for side, processor, results in order if i % 2 == 0 else order[::-1]:
                await fill(valkey.url, f"bench-{side}", jobs)
                rate, cpu_per_job = await drain(valkey.url, f"bench-{side}", processor, opts, jobs)
                results.append(rate)
                cpu[side].append(cpu_per_job)
            print(f"round {i + 1:2d}: raw {raw[-1]:5.0f} jobs/s ({cpu['raw'][-1]:3.0f} us CPU/job), "
                  f"pool {ours[-1]:5.0f} jobs/s ({cpu['pool'][-1]:3.0f} us CPU/job)", file=sys.stderr)
    finally:
        await redis_for_ctx.aclose()
        valkey.stop()
    result = {
        "benchmark": "pool dispatch throughput",
        "jobs": jobs, "rounds": rounds, "concurrency": concurrency,
        "raw_jobs_per_s": round(max(raw)), "pool_jobs_per_s": round(max(ours)),
        "ratio": round(statistics.median(o / r for o, r in zip(ours, raw, strict=True)), 3), "budget": BUDGET,
        "raw_cpu_us_per_job": round(statistics.median(cpu["raw"]), 1),
        "pool_cpu_us_per_job": round(statistics.median(cpu["pool"]), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "telemetry_processed": telemetry.processed,
    }  # fmt: skip
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5_000, help="jobs per side per round")
    parser.add_argument("--rounds", type=int, default=12, help="paired rounds; the ratio is their median")
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args()
    r = asyncio.run(main(args.jobs, args.rounds, args.concurrency))
    print(f"raw bullmq.Worker : {r['raw_jobs_per_s']:>7} jobs/s (best of {r['rounds']} rounds)")
    print(f"pool dispatch     : {r['pool_jobs_per_s']:>7} jobs/s (best of {r['rounds']} rounds)")
    print(f"CPU per job       : raw {r['raw_cpu_us_per_job']} us, pool {r['pool_cpu_us_per_job']} us (medians)")
    verdict = "within" if r["ratio"] >= BUDGET else "OVER"
    print(f"ratio             : {r['ratio']:.3f} (median of paired rounds; budget >= {BUDGET}: {verdict} budget); "
          f"peak RSS {r['peak_rss_mb']} MB")
    print(json.dumps(r))
    sys.exit(0 if r["ratio"] >= BUDGET else 1)
