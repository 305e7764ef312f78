"""Test handlers: the dispatch is generic, so these exercise it through real processes.

Side effects go to the tasks database (table test_effects, unique per key) so a test can
count them; attempts are recorded separately to prove a re-run happened.
"""

from __future__ import annotations

import asyncio
import os

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from sqlalchemy import text

from handlers.context import JobContext
from handlers.errors import PermanentError, ThrottledError


class Payload(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class EffectPayload(Payload):
    key: str = Field(min_length=1)
    sleep_seconds: float = 0.0


class SleepPayload(Payload):
    seconds: float = Field(ge=0, le=60)


class FlakyPayload(Payload):
    key: str
    succeed_on_attempt: int = Field(ge=1)


class ThrottlePayload(Payload):
    key: str
    times: int = 1
    retry_after: float = 1.0


class AllocatePayload(Payload):
    mib: int = Field(ge=1, le=64)
    steps: int = Field(ge=1, le=500)
    every_seconds: float = Field(ge=0, le=10)


class OrderPayload(Payload):
    order_id: str
    quantity: int = Field(gt=0)
    email: str


async def effect(ctx: JobContext, payload: EffectPayload) -> dict[str, object]:
    """Record the attempt, do the idempotent side effect, then (optionally) keep running."""
    async with ctx.tasks_db.begin() as conn:
        await conn.execute(
            text("INSERT INTO test_attempts (key, pid, attempt) VALUES (:k, :p, :a)"),
            {"k": payload.key, "p": os.getpid(), "a": ctx.attempt},
        )
        await conn.execute(
            text("INSERT INTO test_effects (key) VALUES (:k) ON CONFLICT (key) DO NOTHING"),
            {"k": payload.key},
        )
    await asyncio.sleep(payload.sleep_seconds)
    return {"key": payload.key, "pid": os.getpid()}


async def sleep(ctx: JobContext, payload: SleepPayload) -> dict[str, float]:
    await asyncio.sleep(payload.seconds)
    return {"slept": payload.seconds}


async def flaky(ctx: JobContext, payload: FlakyPayload) -> dict[str, int]:
    if ctx.attempt < payload.succeed_on_attempt:
        raise RuntimeError(f"downstream unavailable (attempt {ctx.attempt})")
    return {"attempt": ctx.attempt}


async def throttle(ctx: JobContext, payload: ThrottlePayload) -> dict[str, int]:
    seen = await ctx.redis.incr(f"test:throttle:{payload.key}")
    if seen <= payload.times:
        raise ThrottledError("identity answered 429", retry_after=payload.retry_after)
    return {"calls": seen, "attempt": ctx.attempt}


HELD: list[bytearray] = []
"""What test.allocate keeps for the life of the process: a leak, on purpose."""


async def allocate(ctx: JobContext, payload: AllocatePayload) -> dict[str, int]:
    """A handler that keeps allocating: `mib` MiB (written, so resident) every `every_seconds`, `steps` times."""
    for _ in range(payload.steps):
        HELD.append(bytearray(b"\x01") * (payload.mib * 2**20))
        await asyncio.sleep(payload.every_seconds)
    return {"heldMib": sum(map(len, HELD)) // 2**20}


async def refuse(ctx: JobContext, payload: EffectPayload) -> None:
    raise PermanentError(f"organization {payload.key} does not exist")


async def order(ctx: JobContext, payload: OrderPayload) -> dict[str, str]:
    return {"orderId": payload.order_id}


HANDLERS = {
    "test.effect": effect,
    "test.sleep": sleep,
    "test.flaky": flaky,
    "test.throttle": throttle,
    "test.refuse": refuse,
    "test.order": order,
    "test.allocate": allocate,
}
