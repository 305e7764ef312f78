"""Rates that come from timestamps: BullMQ's per-minute counts placed on the minute they belong to. Pure
functions; no I/O here.

How BullMQ keeps `bull:<q>:metrics:completed|failed` (`collectMetrics` in moveToFinished-14.lua): every
finished job, at its worker's clock T, adds 1 to `count`; when T is in a later minute than `prevTS`, it first
LPUSHes `count - prevCount` (the jobs of prevTS's minute), then one 0 per minute between, onto `...:data`, and
sets `prevCount` (the count before this job) and `prevTS` = T. So at any time:

- `count - prevCount` jobs finished in prevTS's minute, and none after it (a later one would have rolled);
- `data[i]` is the count of the minute `i + 1` minutes before prevTS's minute;
- nothing moves while no job finishes: after a burst, the figures stay as they were, however old.

(The zeros pushed are capped at the worker's `maxDataPoints`: only after a gap longer than that, a week for our
queues, does the old minute's count land too recent, and then more than `maxDataPoints` minutes back.)
"""

from __future__ import annotations

from collections.abc import Sequence

MINUTE_MS = 60_000


def minute_series(
    count: int, prev_count: int, prev_ts_ms: int | None, data: Sequence[int], now_ms: float, minutes: int
) -> tuple[int, ...]:
    """Jobs finished per minute, newest first, relative to `now_ms`: index i is the minute i minutes before
    now's (index 0 the current, partial one); a minute in which no job finished is 0.

    A point the writer's clock put after now's minute (its clock runs ahead of ours) counts as the current
    minute. Without `prevTS` (no job finished since the metrics began) nothing can be placed: all zeros.
    """
    series = [0] * minutes
    if prev_ts_ms is None:
        return tuple(series)
    now_minute = int(now_ms // MINUTE_MS)
    open_minute = prev_ts_ms // MINUTE_MS

    def put(minute: int, value: int) -> None:
        ago = max(0, now_minute - minute)
        if ago < minutes:
            series[ago] += value

    put(open_minute, max(0, count - prev_count))
    for i, value in enumerate(data):
        put(open_minute - 1 - i, value)
    return tuple(series)
