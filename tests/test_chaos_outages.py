"""Chaos, the downstream outages of minutes: identity, PostgreSQL and Stripe each unavailable for 5 minutes under
a steady load of their own (no background load: tests/test_chaos.py says why), then the same invariants as every
chaos scenario, no attempt burned on a throttle, and the backlog drained. About 8 minutes each; `-m outage`
(bench/report.py runs them; CI runs the rest of the chaos suite).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.chaos import LOAD_RATE
from tests.support.chaos_load import (
    Load,
    build_load,
    drain,
    finish_producer,
    first_completion_after,
    load_flowing,
    start_producer,
    tag,
)
from tests.support.chaos_stack import (
    POOL_PROGRAMS,
    Stack,
    counter_moved,
    pool_counter,
    stack,  # noqa: F401 - fixture (module-scoped: this module's own stack)
)
from tests.support.chaos_verify import record, verify
from tests.support.waits import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.chaos, pytest.mark.timeout(600 if LOAD_RATE == 0 else 900)]


# -- outages of minutes ------------------------------------------------------------------------------------------
# Each downstream unavailable for 5 minutes under a steady load that starts before and ends after it: nothing fails
# for good (the queue table's retries ride out 15 minutes, tests/test_config.py), no attempt is burned on a throttle,
# every effect happens once and the backlog drains. About 8 minutes each.
OUTAGE_S = 300.0


def log_offsets(stack: Stack) -> dict[Path, int]:
    return {log: log.stat().st_size for log in (stack.sup.home / "var" / "log").glob("*.log")}


def attempts_burned_on_a_throttle(stack: Stack, since: dict[Path, int]) -> list[str]:
    """Retry or failure lines written since `since` whose reason is a 429: each is an attempt a throttle burned
    (a throttle must defer the job instead, leaving its attempts alone)."""
    burned = []
    for log in (stack.sup.home / "var" / "log").glob("*.log"):
        with log.open("rb") as f:
            f.seek(since.get(log, 0))
            text = f.read().decode(errors="replace")
        for line in text.splitlines():
            _, retried, reason = line.partition(" will retry: ")
            if not retried:
                _, _, reason = line.partition(" failed: ")
            if "429" in reason or "Throttled" in reason:
                burned.append(line)
    return burned


async def ride_out(
    stack: Stack, scenario: str, outage: Any, end: Any, scopes: tuple[str, ...]
) -> dict[str, Any]:
    """`outage()` runs for OUTAGE_S under a load spanning it, then `end()`; the invariants, the retries the
    outage caused in `scopes` (evidence it met the load) and the drain after it."""
    load = await build_load(stack, tag(), scale=3)
    since = log_offsets(stack)
    retries_before = await pool_counter(stack, "retries", scopes)
    throttled_before = await pool_counter(stack, "throttled")
    started = time.monotonic()
    # About 10 s of load before the outage, then the outage, then about 100 s of load after it.
    producer = start_producer(stack, load, rate=len(load.jobs) / (OUTAGE_S + 120))
    await wait_for(lambda: load_flowing(stack, load), timeout=60, what="the load being processed")
    await outage()
    await end()
    back_ms = int(time.time() * 1000)
    back = time.monotonic()
    finish_producer(producer, load, timeout=600)
    await drain(stack, load, timeout=600)
    drained_s = round(time.monotonic() - back, 1)
    burned = attempts_burned_on_a_throttle(stack, since)
    figures = await verify(
        stack,
        load,
        scenario,
        started,
        recovery_s=await first_completion_after(stack, load, back_ms),
        extra={
            "outage_s": OUTAGE_S,
            "drained_after_s": drained_s,
            "attempts_burned_on_a_throttle": len(burned),
            "throttled": await pool_counter(stack, "throttled") - throttled_before,
        },
    )
    assert burned == [], burned[:5]
    retries = await counter_moved(stack, "retries", retries_before, f"{scenario}: jobs retried", scopes)
    figures = {**figures, "retries": retries, "longest_job_s": await longest_job_s(stack, load)}
    record(figures)  # longest_job_s: a figure for bench/REPORT.md (about the outage plus one capped wait)
    return figures


async def longest_job_s(stack: Stack, load: Load) -> float:
    """The longest any job of the load took from being added to finishing (its waits included)."""
    redis = stack.redis()
    try:
        longest = 0
        for queue, ids in load.ids.items():
            for job_id in ids.values():
                added, finished = await redis.hmget(f"bull:{queue}:{job_id}", "timestamp", "finishedOn")
                if added and finished:
                    longest = max(longest, int(finished) - int(added))
        return longest / 1000
    finally:
        await redis.aclose()


@pytest.mark.timeout(1500)
@pytest.mark.outage  # 7 minutes each: bench/report.py runs them (-m outage), CI runs the rest of the chaos suite
async def test_identity_unavailable_5_minutes_answering_503_and_429_mixed(stack: Stack):
    before = stack.identity.stats()

    async def outage() -> None:
        # 25 s of 503 then 5 s of 429 (Retry-After 5), ten times: a struggling service that also sheds load.
        deadline = time.monotonic() + OUTAGE_S
        while (left := deadline - time.monotonic()) > 0:
            stack.identity.hook(
                "POST", "/__faults", {"status": 503, "seconds": min(25, left), "path": "/v1/"}
            )
            await asyncio.sleep(min(25, left))  # the fault's length is the point
            if (left := deadline - time.monotonic()) > 0:
                fault = {"status": 429, "seconds": min(5, left), "path": "/v1/", "retryAfter": 5}
                stack.identity.hook("POST", "/__faults", fault)
                await asyncio.sleep(min(5, left))

    after: dict[str, int] = {}

    async def ended() -> None:  # the last slice has ended by itself
        after.update(stack.identity.stats())

    figures = await ride_out(stack, "identity unavailable 5 min (503 and 429)", outage, ended, POOL_PROGRAMS)
    answered = {s: after.get(f"fault {s}", 0) - before.get(f"fault {s}", 0) for s in (503, 429)}
    record({**figures, "identity_503s": answered[503], "identity_429s": answered[429]})
    assert answered[503] > 0 and answered[429] > 0, answered
    assert figures["throttled"] > 0, "no job was deferred by a 429: the mix never met the load"


@pytest.mark.timeout(1500)
@pytest.mark.outage  # 7 minutes each: bench/report.py runs them (-m outage), CI runs the rest of the chaos suite
async def test_postgres_stopped_5_minutes_then_restarted(stack: Stack):
    async def outage() -> None:
        stack.pg.stop()
        await asyncio.sleep(OUTAGE_S)  # the outage's length is the point

    async def end() -> None:
        stack.pg.start()

    await ride_out(stack, "PostgreSQL stopped 5 min", outage, end, POOL_PROGRAMS)


@pytest.mark.timeout(1500)
@pytest.mark.outage  # 7 minutes each: bench/report.py runs them (-m outage), CI runs the rest of the chaos suite
async def test_stripe_stopped_5_minutes_then_restarted(stack: Stack):
    async def outage() -> None:
        stack.stripe.stop()  # connections refused; its objects are kept in its state file
        await asyncio.sleep(OUTAGE_S)  # the outage's length is the point

    async def end() -> None:
        stack.stripe.start()

    await ride_out(stack, "Stripe stopped 5 min", outage, end, ("billing-invoice",))
