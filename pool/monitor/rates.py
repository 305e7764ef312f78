"""Rates that come from timestamps: BullMQ's per-minute counts placed on the minute they belong to, and the
backlog's drain ETA from arrivals against departures over the last minutes (the pool's backlog samples in the
recent buckets). Pure functions; no I/O here.

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
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pool.monitor.recent import RecentCounts
    from pool.monitor.snapshot import QueueStats

MINUTE_MS = 60_000
WINDOW_S = 300.0
"""Arrivals and departures are measured over the last 5 minutes of samples."""
MIN_SPAN_S = 30.0
"""Below this much history the backlog's change is a burst, not a trend: no rate yet."""


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


def backlog(q: QueueStats) -> int:
    """The jobs ready to run and not taken yet: what a drain ETA empties."""
    return q.counts["waiting"] + q.counts["prioritized"]


@dataclass(frozen=True)
class Sample:
    at: float
    """Epoch seconds of the snapshot."""
    backlog: int
    completed_total: int
    failed_total: int


@dataclass(frozen=True)
class Rates:
    """Per minute over `span_s` seconds. `net_per_min` is the backlog's own change (= arrivals - departures):
    above 0 it grows, below 0 it drains."""

    arrivals_per_min: float
    departures_per_min: float
    net_per_min: float
    span_s: float


def net_rate(
    samples: Sequence[Sample], window_s: float = WINDOW_S, min_span_s: float = MIN_SPAN_S
) -> Rates | None:
    """Arrivals against departures between the oldest sample inside the window and the newest one.

    BullMQ stores no arrivals; they are what left (completed + failed, from its cumulative counts) plus what
    piled up (the backlog's change). None while the samples span less than `min_span_s`.
    """
    if not samples:
        return None
    last = samples[-1]
    first = next(s for s in samples if s.at >= last.at - window_s)
    span = last.at - first.at
    if span < min_span_s:
        return None
    per_min = 60.0 / span
    departures = (
        last.completed_total - first.completed_total + last.failed_total - first.failed_total
    ) * per_min
    net = (last.backlog - first.backlog) * per_min
    return Rates(departures + net, departures, net, span)


def backlog_samples(recent: RecentCounts, queue: str) -> list[Sample]:
    """The queue's backlog and finished counts as the pool sampled them into the recent buckets (one sample per
    bucket, oldest first): what the drain ETA and the backlog-growing finding are both taken from, so a fresh
    `ma-top --once` and a long-open ma-top read the same trend."""
    points = recent.gauges(queue, "backlog", "completed_total", "failed_total")
    return [Sample(at, *values) for at, values in points]


def drain_eta_s(backlog: int, rates: Rates) -> float | None:
    """Seconds until the backlog is empty at the net rate; None when it does not drain (grows or stands)."""
    if backlog <= 0:
        return 0.0
    if rates.net_per_min >= 0:
        return None
    return backlog / -rates.net_per_min * 60
