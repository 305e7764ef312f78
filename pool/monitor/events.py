"""The `ma:events` stream as an on-call engineer reads it: the last minutes by time, repeats coalesced.

Read by stream id, which is time: on open, from `<now - RECENT_S>-0` (Redis' clock) in bounded batches, so one
busy producer cannot hide what happened a few minutes ago behind "the newest N"; then incrementally after the
last id read. An event's place in time is its own `ts`: events buffered by a process while Redis was down reach
the stream late and are put back where they happened.

A coalesced row counts events (stream records). A record of a kind in `COUNTED_KINDS` also stands for a number
of occurrences (`count`: the throttles of a window, the failed items of one second of a bulk job) over its own
span (`since`..`until`); the row adds those up separately as its `total`, and its span runs from the earliest
start to the latest end of its records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter
from typing import TYPE_CHECKING, cast

from pool.contracts import COUNTED_KINDS, EVENTS_MAXLEN, EVENTS_STREAM

if TYPE_CHECKING:
    from collections.abc import Iterable

    from redis.asyncio import Redis

RECENT_S = 15 * 60
"""On open, read the events of the last 15 minutes."""
READ_BATCH = 1_000
READ_BATCHES = EVENTS_MAXLEN // READ_BATCH
"""At most this many batches per read: a read never takes more than the capped stream holds."""

Entry = tuple[str, dict[str, str]]


async def events_after(redis: Redis, last_id: str = "-", batch: int = READ_BATCH) -> list[Entry]:
    """Stream entries after `last_id`, oldest id first; `-` (a fresh ma-top): those of the last RECENT_S by
    stream id. At most READ_BATCHES batches of `batch` per call: the next call goes on after the last id."""
    if last_id == "-":
        seconds, micros = await redis.time()
        start = f"{int(seconds) * 1000 + int(micros) // 1000 - RECENT_S * 1000}-0"
    else:
        start = f"({last_id}"
    out: list[Entry] = []
    for _ in range(READ_BATCHES):
        chunk = cast(list[Entry], await redis.xrange(EVENTS_STREAM, start, "+", count=batch))
        out.extend(chunk)
        if len(chunk) < batch:
            break
        start = f"({chunk[-1][0]}"
    return out


def ts_of(event: dict[str, str]) -> int:
    """The event's own time (epoch ms); 0 for a record without one."""
    try:
        return int(event.get("ts") or 0)
    except ValueError:
        return 0


def _ms(event: dict[str, str], name: str, default: int) -> int:
    try:
        return int(event.get(name) or default)
    except ValueError:
        return default


@dataclass
class EventRow:
    """Repeats of one (kind, queue, message) inside a window: one line of the events view."""

    kind: str
    queue: str
    message: str
    first_ms: int
    """Epoch ms: the earliest start of its records (a record's `since`, else its `ts`)."""
    last_ms: int
    """Epoch ms: the latest end of its records (a record's `until`, else its `ts`)."""
    events: int = 0
    """Stream records coalesced here: events, never items."""
    total: int | None = None
    """For a kind in COUNTED_KINDS: the occurrences its records stand for (throttles, failed items)."""
    procs: set[tuple[str, str]] = field(default_factory=set)
    """Every (host, pid) that wrote one of its records."""
    sample: dict[str, str] = field(default_factory=dict)
    """The first record, for the fields not summarised here (jobId, bulkJobId, ...)."""

    @property
    def span_s(self) -> float:
        return (self.last_ms - self.first_ms) / 1000

    @property
    def noun(self) -> str | None:
        """What `total` counts (`throttles`), or None when the kind counts nothing but events."""
        return COUNTED_KINDS.get(self.kind)

    def where(self) -> dict[str, list[str]]:
        """host -> its pids, both sorted (pids numerically)."""
        hosts: dict[str, list[str]] = {}
        for host, pid in sorted(self.procs, key=lambda p: (p[0], int(p[1]) if p[1].isdigit() else 0, p[1])):
            hosts.setdefault(host, []).append(pid)
        return hosts


def coalesce(events: Iterable[dict[str, str]], window_s: float = 60.0) -> list[EventRow]:
    """Rows of repeats of (kind, queue, message) whose records start within `window_s` of the row's first,
    taken in the order of the events' own `ts`; the rows in order of their first time."""
    rows: list[EventRow] = []
    open_rows: dict[tuple[str, str, str], EventRow] = {}
    window_ms = window_s * 1000
    for ts, e in sorted(((ts_of(e), e) for e in events), key=itemgetter(0)):
        start = _ms(e, "since", ts) if "since" in e else ts
        end = _ms(e, "until", ts) if "until" in e else ts
        key = (e.get("kind", ""), e.get("queue", ""), e.get("message", ""))
        row = open_rows.get(key)
        if row is None or start - row.first_ms > window_ms:
            row = open_rows[key] = EventRow(*key, first_ms=start, last_ms=end, sample=e)
            rows.append(row)
        elif start < row.first_ms:
            row.first_ms = start
        if end > row.last_ms:
            row.last_ms = end
        row.events += 1
        if key[0] in COUNTED_KINDS:
            row.total = (row.total or 0) + max(_ms(e, "count", 1), 0)
        if "host" in e or "pid" in e:
            row.procs.add((e.get("host", ""), e.get("pid", "")))
    rows.sort(key=lambda r: (r.first_ms, r.last_ms))
    return rows
