"""Jobs run twice: the same job name with byte-identical data under different job ids, among each queue's
retained completed and failed jobs that finished in the last hour. A producer that retries an add without a
deterministic job id (or BullMQ's `deduplication.id`) makes these; a handler that is not idempotent then does
its side effect twice. No Textual here.

A slower check than the snapshot (ma-top runs it every 30 s in the background, `ma-top --once` once): bounded
to the newest `MAX_JOBS` finished jobs per state and queue, and to three pipelined round trips per queue, the
data read only for jobs whose name and data length already collide. Jobs of a BullMQ job scheduler (same data
every run by design) and jobs with empty data (sweeps) are left out. The finding is made from what is in Redis
now, so it clears by itself once those jobs leave retention or the hour.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

from pool.contracts import BULL_PREFIX, bull_key
from pool.monitor.finding import SEVERITIES, Finding

WINDOW_S = 3600.0
"""Jobs finished within this long are compared."""
MAX_JOBS = 1000
"""Newest finished jobs read per state (completed, failed) and queue."""
EVERY_S = 30.0
"""How often ma-top and the exporter run the check (off the refresh path)."""
TIMEOUT_S = 5.0
"""A check that takes longer is given up (shown as an error; the snapshot's findings stand without it)."""
SAMPLE_IDS = 4


@dataclass(frozen=True)
class DuplicateGroup:
    queue: str
    name: str
    ids: tuple[str, ...]
    """The jobs with this name and identical data, newest finished first."""


async def duplicate_groups(
    redis: Redis,
    queues: Iterable[str],
    *,
    now_ms: float | None = None,
    window_s: float = WINDOW_S,
    limit: int = MAX_JOBS,
    prefix: str = BULL_PREFIX,
) -> list[DuplicateGroup]:
    """Every queue's groups of finished jobs run twice or more with the same name and data, biggest first. The
    hour is counted back from `now_ms`, by default Redis' clock (the one BullMQ's `finishedOn` is near)."""
    if now_ms is None:
        seconds, micros = await redis.time()
        now_ms = seconds * 1000 + micros / 1000
    since = int(now_ms - window_s * 1000)
    found: list[DuplicateGroup] = []
    for queue in queues:
        found.extend(await _queue_groups(redis, queue, since, limit, prefix))
    return sorted(found, key=lambda g: (-len(g.ids), g.queue, g.name))


async def _queue_groups(
    redis: Redis, queue: str, since: int, limit: int, prefix: str
) -> list[DuplicateGroup]:
    async with redis.pipeline(transaction=False) as pipe:
        for state in ("completed", "failed"):  # scored by finishedOn (ms)
            pipe.zrevrangebyscore(bull_key(queue, state, prefix=prefix), "+inf", since, start=0, num=limit)
        ids = [job_id for page in await pipe.execute() for job_id in cast(list[str], page)]
    if len(ids) < 2:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(bull_key(queue, job_id, prefix=prefix), "name", "rjk")
            pipe.hstrlen(bull_key(queue, job_id, prefix=prefix), "data")
        replies = await pipe.execute()
    by_shape: dict[tuple[str, int], list[str]] = {}
    for i, job_id in enumerate(ids):
        (name, scheduler), size = cast(list[Any], replies[2 * i]), int(replies[2 * i + 1] or 0)
        if name is None or scheduler or job_id.startswith("repeat:") or size <= 2:  # gone, scheduled, `{}`
            continue
        by_shape.setdefault((str(name), size), []).append(job_id)
    candidates = [
        (name, job_id) for (name, _), group in by_shape.items() if len(group) > 1 for job_id in group
    ]
    if not candidates:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for _, job_id in candidates:
            pipe.hget(bull_key(queue, job_id, prefix=prefix), "data")
        datas = await pipe.execute()
    same: dict[tuple[str, str], list[str]] = {}
    for (name, job_id), data in zip(candidates, datas, strict=True):
        if data is not None:
            same.setdefault((name, str(data)), []).append(job_id)
    return [DuplicateGroup(queue, name, tuple(group)) for (name, _), group in same.items() if len(group) > 1]


def duplicate_findings(groups: Sequence[DuplicateGroup]) -> list[Finding]:
    """One `duplicates` finding per queue with groups: how many, and a sample group's ids."""
    per_queue: dict[str, list[DuplicateGroup]] = {}
    for group in groups:
        per_queue.setdefault(group.queue, []).append(group)
    found = []
    for queue, mine in per_queue.items():
        top = max(mine, key=lambda g: len(g.ids))
        shown = ", ".join(top.ids[:SAMPLE_IDS]) + (" …" if len(top.ids) > SAMPLE_IDS else "")
        jobs = sum(len(g.ids) for g in mine)
        found.append(
            Finding(
                "warning",
                "duplicates",
                queue,
                "the same payload ran under different job ids (a producer re-adding without a deterministic id)",
                f"{len(mine)} group(s), {jobs} jobs finished in the last hour; e.g. {top.name} ids {shown}",
                "ma-top 1, enter on the queue (compare the jobs); the producer: a deterministic jobId or "
                "deduplication.id",
                goto=f"job:{queue}:{top.ids[0]}",
            )
        )
    return found


def with_duplicates(found: Sequence[Finding], duplicates: Sequence[Finding]) -> list[Finding]:
    """The snapshot's findings and the duplicate check's, most severe first (stable within a severity)."""
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted([*found, *duplicates], key=lambda f: rank[f.severity])
