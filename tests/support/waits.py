"""Waiting on a condition with a deadline, never a fixed sleep: the async and the blocking form, and for jobs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from bullmq import Job, Queue


async def wait_for(
    check: Callable[[], Any], *, timeout: float = 20.0, what: str = "condition", every: float = 0.1
) -> Any:
    """Poll an (async or sync) check until it returns something truthy, and return that; fail naming `what`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def poll(
    check: Callable[[], Any], *, timeout: float = 20.0, what: str = "condition", every: float = 0.1
) -> Any:
    """`wait_for` for code with no event loop (constructors of real processes, synchronous tests).

    The check may raise AssertionError to give up early (e.g. the process it waits for has exited)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


async def settle(redis: Any, queue: str, job_id: str, *, timeout: float = 30) -> Job:
    """Wait until a job is completed or failed; return it (as bullmq reads it)."""
    q = Queue(queue, {"connection": redis})

    async def done() -> bool:
        return await q.getJobState(job_id) in ("completed", "failed")

    await wait_for(done, timeout=timeout, what=f"{queue} job {job_id} to settle")
    job = await Job.fromId(q, job_id)
    assert job is not None, f"{queue} job {job_id} settled, then vanished (removed on completion?)"
    return job


async def run_job(redis: Any, queue: str, name: str, data: Any, *, timeout: float = 30, **opts: Any) -> Job:
    """Add a job and wait until it settles."""
    job = await Queue(queue, {"connection": redis}).add(name, data, opts)
    return await settle(redis, queue, job.id, timeout=timeout)


async def completed(queue: Queue, job_id: str, timeout: float = 30) -> Job:
    """Wait until a job is completed (failed does not count); return it."""

    async def is_completed() -> bool:
        return await queue.getJobState(job_id) == "completed"

    await wait_for(is_completed, timeout=timeout, what=f"job {job_id} completed")
    job = await Job.fromId(queue, job_id)
    assert job is not None, f"job {job_id} completed, then vanished"
    return job


async def completed_count_is(queue: Queue, want: int) -> bool:
    """For `wait_for`: the queue holds exactly `want` completed jobs."""
    return await queue.getCompletedCount() == want
