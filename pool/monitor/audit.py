"""Reading the operator actions journal back: the audit stream by time (its ids are Redis' clock), or, when
Redis does not answer, the local journal file every `Journal` also writes (that host's actions only). No Textual.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

from pool.contracts import AUDIT_STREAM

if TYPE_CHECKING:
    from redis.asyncio import Redis

READ_MAX = 5_000
"""At most this many actions per read, the newest kept: an incident's actions are tens, not thousands."""


@dataclass(frozen=True)
class AuditRead:
    """The journal's entries since a time, oldest first, and where and how completely they were read."""

    entries: list[dict[str, str]] = field(default_factory=list)
    """As the `Journal` writes them: ts (epoch ms), who, pid, action, target, ids (a JSON list), outcome."""
    origin: str = AUDIT_STREAM
    """`ma:audit`, or the path of the local journal file it was read from instead."""
    error: str = ""
    """Why the stream was not read (the file was read instead)."""
    cut: bool = False
    """More than READ_MAX entries: only the newest READ_MAX are here."""


async def stream_since(redis: Redis, since_ms: int, limit: int = READ_MAX) -> AuditRead:
    """The audit stream's entries from `since_ms` on, by stream id, newest `limit` kept; oldest first."""
    newest = cast(
        list[tuple[str, dict[str, str]]],
        await redis.xrevrange(AUDIT_STREAM, "+", f"{since_ms}-0", count=limit + 1),
    )
    entries = [fields for _id, fields in reversed(newest[:limit])]
    return AuditRead(entries, AUDIT_STREAM, cut=len(newest) > limit)


def file_since(path: Path, since_ms: int, error: str, limit: int = READ_MAX) -> AuditRead:
    """The local journal file's entries from `since_ms` on (a line that is not a record is skipped)."""
    if not path.exists():
        return AuditRead([], str(path), f"{error}; no local journal file at {path}")
    entries = []
    with path.open() as lines:
        for line in lines:
            try:
                record = json.loads(line)
                if int(record.get("ts", 0)) >= since_ms:
                    entries.append({str(k): str(v) for k, v in record.items()})
            except (ValueError, AttributeError):
                continue
    return AuditRead(entries[-limit:], str(path), error, cut=len(entries) > limit)
