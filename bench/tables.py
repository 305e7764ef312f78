"""Queue tables and handlers for the benchmarks (no-op work, so the pool's own overhead is what is measured)."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace
from typing import Any

from handlers.context import JobContext
from pool.queue_table import QueueSpec


async def noop(ctx: JobContext, payload: dict[str, Any]) -> None:
    return None


async def pickup(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Records enqueue -> handler start in ms (the producer put its wall clock in `t`)."""
    await ctx.redis.rpush("bench:latency", (time.time() - float(payload["t"])) * 1000)


BENCH = QueueSpec("bench", {"noop": noop, "pickup": pickup}, concurrency=10, attempts=1)
NOOP = {"bench": replace(BENCH, keep_completed={"count": 0})}


IO_SECONDS = 0.02


async def io_wait(ctx: JobContext, payload: dict[str, Any]) -> dict[str, float] | None:
    """An I/O-bound job: one 20 ms await (bench/io_bound.py), or as many seconds as its `s` says (the spread
    round). A traced job (`{"trace": true}`, the breakdown round) returns when its await began and ended (epoch
    ms), so the lane's cycle can be taken apart."""
    seconds = payload.get("s", IO_SECONDS)
    if not payload.get("trace"):
        await asyncio.sleep(seconds)
        return None
    began = time.time() * 1000
    await asyncio.sleep(seconds)
    return {"began": began, "ended": time.time() * 1000}


IO = {
    "bench": replace(
        BENCH,
        handlers={"io": io_wait},
        concurrency=int(os.environ.get("BENCH_CONCURRENCY", "50")),
        keep_completed={"count": 0},
    )
}
"""The I/O-bound table: its concurrency from BENCH_CONCURRENCY (bench/io_bound.py sets it per run)."""
