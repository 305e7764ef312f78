"""Counts of the last minutes, read from Redis: the pool's counters bucketed by when they were counted
(`ma:recent:<bucket>`, pool/contracts.py), so every reader (ma-top, `ma-top --once`, the exporter) takes a rate
over the same window from the same data, without watching first. No Textual here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from pool.contracts import RECENT_BUCKET_S, recent_field, recent_key


@dataclass(frozen=True)
class Increase:
    events: int
    """How many times the counter moved within the window."""
    span_s: float
    """The time the counted buckets span (the window, rounded out to whole buckets: up to one bucket more)."""

    def per_min(self) -> float:
        return self.events / max(self.span_s, 1.0) * 60


@dataclass(frozen=True)
class RecentCounts:
    now: float = 0.0
    """Epoch seconds, Redis' clock, when they were read."""
    window_s: float = 0.0
    """How far back they were read: a longer window asked of them is cut to this."""
    buckets: Mapping[int, Mapping[str, int]] = field(default_factory=dict)
    """bucket (epoch seconds // RECENT_BUCKET_S) -> `<scope>|<counter>` -> increments counted in it."""

    def increase(self, scope: str, counter: str, window_s: float) -> Increase:
        """The counter's increments over the last `window_s` seconds (at most `self.window_s`)."""
        first, last = _span(self.now, min(window_s, self.window_s))
        name = recent_field(scope, counter)
        events = sum(self.buckets.get(b, {}).get(name, 0) for b in range(first, last + 1))
        return Increase(events, self.now - first * RECENT_BUCKET_S)

    def gauges(self, scope: str, *names: str) -> list[tuple[float, tuple[int, ...]]]:
        """The buckets of the window holding every one of the gauges `names` of `scope`, oldest first: (the
        bucket's start, epoch seconds; the values in the order asked)."""
        first, last = _span(self.now, self.window_s)
        fields = [recent_field(scope, name) for name in names]
        out = []
        for b in range(first, last + 1):
            bucket = self.buckets.get(b, {})
            if all(f in bucket for f in fields):
                out.append((float(b * RECENT_BUCKET_S), tuple(bucket[f] for f in fields)))
        return out


def _span(now: float, window_s: float) -> tuple[int, int]:
    """The first and last bucket of the window ending now: whole buckets covering at least the window (up to
    one bucket more), the last being the current, partial one."""
    return int(now - window_s) // RECENT_BUCKET_S, int(now) // RECENT_BUCKET_S


async def read_recent(redis: Redis, now: float, window_s: float) -> RecentCounts:
    """One pipelined round trip: a HGETALL per bucket of the window (31 for 5 minutes)."""
    async with redis.pipeline(transaction=False) as pipe:
        ask_recent(pipe, now, window_s)
        return recent_from(await pipe.execute(), now, window_s)


def ask_recent(pipe: Any, now: float, window_s: float) -> None:
    """Queue the window's HGETALLs on `pipe` (a caller's pipeline, to share its round trip)."""
    first, last = _span(now, window_s)
    for bucket in range(first, last + 1):
        pipe.hgetall(recent_key(bucket))


def recent_from(replies: list[Any], now: float, window_s: float) -> RecentCounts:
    """The counts from the replies of `ask_recent` (in the order it queued them)."""
    first, last = _span(now, window_s)
    buckets = {
        b: {k: int(v) for k, v in reply.items()}
        for b, reply in zip(range(first, last + 1), replies, strict=True)
        if reply
    }
    return RecentCounts(now, window_s, buckets)
