"""Queue tables and handlers for the benchmarks (no-op work, so the pool's own overhead is what is measured)."""

from __future__ import annotations

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
