"""Which failure groups are growing: each queue's jobs that failed in the last minutes, grouped by the same
signature as the failures view (`queries.normalize` + `queries.top_frame`, so the finding's group is the one
`ma-top 5` shows), with the time each failed.

Why here and not a counter in the pool: BullMQ already keeps every failed job in `bull:<queue>:failed` scored
by when it failed, with its reason and stack trace, so the recent ones are one range read by score away; a
per-signature counter in the pool would need the signature code in the hot path and a bound on how many
signatures Redis may hold. The read is bounded (at most RECENT_MAX jobs per queue from the last RECENT_S) and
runs on the collector's slower timer (every 30 s), never on the per-tick path. Final failures only: retried
attempts are the `retries` rate finding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

from pool.contracts import BULL_PREFIX, bull_key
from pool.monitor.queries import normalize, top_frame

RECENT_S = 15 * 60
"""How far back the read goes (the longest window a finding may ask for)."""
RECENT_MAX = 200
"""At most this many of a queue's newest failures are read: a storm shows as "at least 200"."""


@dataclass(frozen=True)
class RecentFailures:
    queue: str
    signature: str
    top_frame: str
    example: str
    """One full reason of the group (the newest)."""
    failed_at: tuple[float, ...]
    """Epoch seconds each failed, newest first."""
    ids: tuple[str, ...]
    """The job ids, newest first."""
    capped: bool = False
    """The queue had more failures in RECENT_S than were read."""

    def within(self, now: float, window_s: float) -> int:
        return sum(1 for at in self.failed_at if at >= now - window_s)


async def recent_failures(
    redis: Redis, queues: Sequence[str], now: float, prefix: str = BULL_PREFIX
) -> tuple[RecentFailures, ...]:
    """Two pipelined round trips whatever the number of failed jobs: the ids by score, then their fields."""
    async with redis.pipeline(transaction=False) as pipe:
        for q in queues:
            pipe.zrevrangebyscore(
                bull_key(q, "failed", prefix=prefix), "+inf", int((now - RECENT_S) * 1000), 0, RECENT_MAX
            )
        id_lists = cast(list[list[str]], await pipe.execute())
    if not any(id_lists):
        return ()
    async with redis.pipeline(transaction=False) as pipe:
        for q, ids in zip(queues, id_lists, strict=True):
            for job_id in ids:
                pipe.hmget(bull_key(q, job_id, prefix=prefix), "failedReason", "stacktrace", "finishedOn")
        rows: list[Any] = await pipe.execute()
    found: list[RecentFailures] = []
    at = 0
    for q, ids in zip(queues, id_lists, strict=True):
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        for job_id in ids:
            reason, stack, finished = rows[at]
            at += 1
            if not finished:
                continue  # removed between the two reads
            g = groups.setdefault(
                (normalize(reason or ""), top_frame(stack)), {"example": reason or "", "at": [], "ids": []}
            )
            g["at"].append(int(finished) / 1000)
            g["ids"].append(job_id)
        for (signature, frame), g in groups.items():
            found.append(
                RecentFailures(
                    q, signature, frame, g["example"], tuple(g["at"]), tuple(g["ids"]), len(ids) >= RECENT_MAX
                )
            )
    return tuple(found)
