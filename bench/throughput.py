"""Pool throughput through the full dispatch vs a raw bullmq.Worker: same Redis, same process, same run.

Three sides, each a worker with the same options and the same pooled connection setup, on its own queue:
- `raw`: bullmq.Worker with a no-op processor (the reference of issue #2);
- `pool`: what `ma-worker run` runs: PoolWorker + Dispatcher (validation, context, log line, telemetry);
- `bare`: PoolWorker with a no-op processor, so `pool / bare` is the dispatch overhead alone.

All three workers stay up for the whole run on paused queues. A round fills each queue while it is paused, then
resumes it and times until every job completed, one side after the other, in a rotating order. This machine's
speed drifts by tens of percent from second to second, so rounds are short and many, and each ratio is the
median of per-round ratios. Budget (issue #2): pool / raw >= 0.9. `pool / bare` is printed for information: what
the dispatcher itself costs on top of our worker core (it has no budget of its own).

    .venv/bin/python bench/throughput.py [--jobs 3000] [--rounds 15] [--concurrency 10]
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bullmq import Queue, Worker
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import create_async_engine

from devstack import engines
from handlers.context import JobContext, Resources
from pool.connection import pooled_redis
from pool.dispatch import Dispatcher
from pool.logs import setup_logging
from pool.queue_table import QueueSpec
from pool.telemetry import Telemetry
from pool.worker import PoolWorker

BUDGET = 0.9
SIDES = ("raw", "bare", "pool")


class NoopPayload(BaseModel):
    organizationId: str
    n: int


async def noop(ctx: JobContext, payload: NoopPayload) -> None:
    return None


async def raw_processor(job, token):
    return None


class Side:
    """One worker on its own paused queue, counting completions."""

    def __init__(self, name: str, url: str, worker_class: type[Worker], processor, opts: dict) -> None:
        self.name, self.queue_name = name, f"bench-{name}"
        self.redis = pooled_redis(url, max_connections=opts["concurrency"] + 6)
        self.queue = Queue(self.queue_name, {"connection": self.redis})
        self.worker_class, self.processor, self.opts = worker_class, processor, opts
        self.completed, self.want = 0, 0
        self.done = asyncio.Event()
        self.rates: list[float] = []
        self.cpu: list[float] = []

    async def start(self) -> None:
        await self.queue.pause()
        self.worker = self.worker_class(
            self.queue_name, self.processor, {**self.opts, "connection": self.redis}
        )
        self.worker.on("completed", self._completed)

    def _completed(self, *_: object) -> None:
        self.completed += 1
        if self.completed >= self.want:
            self.done.set()

    async def round(self, jobs: int) -> None:
        for start in range(0, jobs, 1000):
            await self.queue.addBulk(
                [
                    {
                        "name": "bench.noop",
                        "data": {"organizationId": "org_acme", "n": i},
                        "opts": {"removeOnComplete": True},
                    }
                    for i in range(start, min(jobs, start + 1000))
                ]
            )
        self.completed, self.want = 0, jobs
        self.done.clear()
        started, cpu = time.perf_counter(), time.process_time()
        await self.queue.resume()
        await self.done.wait()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        await self.queue.pause()
        self.rates.append(jobs / elapsed)
        self.cpu.append(cpu * 1e6 / jobs)

    async def stop(self) -> None:
        await self.worker.close()
        await self.redis.aclose()


def ratio(a: Side, b: Side) -> float:
    return statistics.median(x / y for x, y in zip(a.rates, b.rates, strict=True))


async def main(jobs: int, rounds: int, concurrency: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="ma-bench-"))
    valkey = engines.valkey(tmp / "valkey", persistent=False).start()
    devnull = open(os.devnull, "w")  # noqa: SIM115
    setup_logging(["bench-service-role-key"])  # production always has secrets to scrub
    logging.getLogger().handlers[0].setStream(devnull)  # format every line as in production, write nowhere
    spec = QueueSpec("bench-pool", {"bench.noop": noop}, concurrency=concurrency)
    opts = {k: v for k, v in spec.worker_options().items() if k not in ("removeOnComplete", "removeOnFail")}
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:9/none")  # never connected
    telemetry = Telemetry("bench-pool", "bench", concurrency)
    redis_for_ctx = pooled_redis(valkey.url, max_connections=2)
    dispatcher = Dispatcher(spec, Resources(None, redis_for_ctx, engine, engine, telemetry.event), telemetry)
    sides = {
        "raw": Side("raw", valkey.url, Worker, raw_processor, opts),
        "bare": Side("bare", valkey.url, PoolWorker, raw_processor, opts),
        "pool": Side("pool", valkey.url, PoolWorker, dispatcher, opts),
    }
    try:
        for side in sides.values():
            await side.start()
        for side in sides.values():  # warm-up round, not counted
            await side.round(min(jobs, 1000))
            side.rates.clear()
            side.cpu.clear()
        for i in range(rounds):  # rotate who goes first: no side always gets the warmer machine
            order = list(SIDES[i % 3 :] + SIDES[: i % 3])
            for name in order if i % 2 == 0 else order[::-1]:
                await sides[name].round(jobs)
            print(
                f"round {i + 1:2d}: "
                + ", ".join(
                    f"{s.name} {s.rates[-1]:5.0f} jobs/s ({s.cpu[-1]:3.0f} us CPU/job)"
                    for s in sides.values()
                ),
                file=sys.stderr,
            )
    finally:
        for side in sides.values():
            await side.stop()
        await redis_for_ctx.aclose()
        valkey.stop()
    raw, bare, pool = sides["raw"], sides["bare"], sides["pool"]
    result = {
        "benchmark": "pool dispatch throughput",
        "jobs": jobs,
        "rounds": rounds,
        "concurrency": concurrency,
        "raw_jobs_per_s": round(statistics.median(raw.rates)),
        "bare_jobs_per_s": round(statistics.median(bare.rates)),
        "pool_jobs_per_s": round(statistics.median(pool.rates)),
        "ratio": round(ratio(pool, raw), 3),
        "dispatch_ratio": round(ratio(pool, bare), 3),
        "budget": BUDGET,
        "raw_cpu_us_per_job": round(statistics.median(raw.cpu), 1),
        "bare_cpu_us_per_job": round(statistics.median(bare.cpu), 1),
        "pool_cpu_us_per_job": round(statistics.median(pool.cpu), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "telemetry_processed": telemetry.processed,
    }
    result["ok"] = result["ratio"] >= BUDGET
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=3_000, help="jobs per side per round")
    parser.add_argument(
        "--rounds", type=int, default=15, help="rounds; each ratio is the median of per-round ratios"
    )
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args()
    r = asyncio.run(main(args.jobs, args.rounds, args.concurrency))
    print(
        f"raw bullmq.Worker         : {r['raw_jobs_per_s']:>7} jobs/s, {r['raw_cpu_us_per_job']} us CPU/job (medians)"
    )
    print(
        f"PoolWorker, no-op         : {r['bare_jobs_per_s']:>7} jobs/s, {r['bare_cpu_us_per_job']} us CPU/job"
    )
    print(
        f"pool (PoolWorker+dispatch): {r['pool_jobs_per_s']:>7} jobs/s, {r['pool_cpu_us_per_job']} us CPU/job"
    )
    verdict = "within" if r["ok"] else "OVER"
    print(
        f"pool / raw bullmq.Worker: {r['ratio']:.3f} (median of per-round ratios; budget >= {BUDGET}: {verdict} budget)"
    )
    print(f"dispatcher alone (pool / PoolWorker no-op): {r['dispatch_ratio']:.3f} (information)")
    print(json.dumps(r))
    sys.exit(0 if r["ok"] else 1)
