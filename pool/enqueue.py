"""`ma-worker enqueue`: add a job, requeue one failed job, or requeue all failed jobs of a queue."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from bullmq import Job, Queue
from redis.asyncio import Redis

from pool.contracts import bull_key
from pool.queue_table import QueueSpec

PREVIEW = 10


class CliError(Exception):
    """A user mistake or a missing thing: printed as one line, exit 2."""


def parse_data(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise CliError(
            f"--data is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    if not isinstance(data, dict):
        raise CliError(f"--data must be a JSON object (the job payload), got {type(data).__name__}")
    return data


def spec_for(table: Mapping[str, QueueSpec], name: str) -> QueueSpec:
    if name not in table:
        raise CliError(f"unknown queue {name!r}; known queues: {', '.join(table)}")
    return table[name]


async def add_job(
    redis: Redis, spec: QueueSpec, name: str, data: dict[str, Any], job_id: str | None, delay_ms: int | None
) -> str:
    if job_id is not None and (not job_id or ":" in job_id or job_id.isdigit()):
        # bullmq silently ignores a duplicate id and breaks on ':' (LIBRARY_TRAPS §9); integers clash with its own ids
        raise CliError(f"--job-id {job_id!r} is invalid: use a non-empty, non-numeric id without ':'")
    if job_id is not None and await redis.exists(bull_key(spec.name, job_id)):
        state = await Queue(spec.name, {"connection": redis}).getJobState(job_id)
        return f"job {job_id} already exists on {spec.name} ({state}); nothing added"
    opts = spec.job_options()
    if job_id is not None:
        opts["jobId"] = job_id
    if delay_ms:
        if delay_ms < 0:
            raise CliError("--delay must be >= 0 milliseconds")
        opts["delay"] = delay_ms
    job = await Queue(spec.name, {"connection": redis}).add(name, data, opts)
    when = f" (runs in {delay_ms / 1000:.1f}s)" if delay_ms else ""
    return f"added {spec.name} {name}#{job.id}{when}"


async def requeue_one(redis: Redis, spec: QueueSpec, job_id: str) -> str:
    queue = Queue(spec.name, {"connection": redis})
    job = await Job.fromId(queue, job_id)
    if job is None:
        raise CliError(f"no job {job_id!r} on queue {spec.name}")
    state = await queue.getJobState(job_id)
    if state != "failed":
        raise CliError(f"job {job_id} on {spec.name} is {state}, not failed; only failed jobs are requeued")
    reason = job.failedReason  # retry() clears it
    await job.retry("failed", {"resetAttemptsMade": True})
    return f"requeued {spec.name} {job.name}#{job_id} (was: {reason})"


async def requeue_failed(
    redis: Redis, spec: QueueSpec, *, assume_yes: bool, confirm: Callable[[str], bool]
) -> str:
    """Requeue the failed jobs counted at the prompt (later failures are left for a new look)."""
    key = bull_key(spec.name, "failed")
    snapshot_ms = int(time.time() * 1000)
    ids = [str(i) for i in await redis.zrangebyscore(key, 0, snapshot_ms)]
    if not ids:
        return f"no failed jobs on {spec.name}"
    queue = Queue(spec.name, {"connection": redis})
    preview = []
    for job_id in ids[-PREVIEW:][::-1]:
        job = await Job.fromId(queue, job_id)
        if job is not None:
            preview.append(f"  {job.name}#{job_id}: {(job.failedReason or '')[:100]}")
    print(f"{len(ids)} failed job(s) on {spec.name}; newest:", *preview, sep="\n", file=sys.stderr)
    if not assume_yes and not confirm(f"Requeue these {len(ids)} failed job(s)? [y/N] "):
        return "nothing requeued"
    done = skipped = 0
    for start in range(0, len(ids), 200):
        results = await asyncio.gather(*(_retry_id(queue, i) for i in ids[start : start + 200]))
        done += sum(results)
        skipped += len(results) - sum(results)
    extra = f", {skipped} skipped (no longer failed)" if skipped else ""
    return f"requeued {done} failed job(s) on {spec.name}{extra}"


async def _retry_id(queue: Queue, job_id: str) -> bool:
    job = await Job.fromId(queue, job_id)
    if job is None:
        return False
    try:
        await job.retry("failed", {"resetAttemptsMade": True})
    except Exception:  # noqa: BLE001 - bullmq raises a bare Exception for a job moved or removed since the snapshot
        return False
    return True
