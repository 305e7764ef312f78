"""What the findings need from earlier snapshots: a bounded ring of each queue's cumulative `ma:stats` counters
with the time they were read, and when Redis was last seen up or first seen down.

The pool's counters (`retries`, `throttled`, `stalled`, `failed`) only ever grow, across hosts and restarts, so
their lifetime value says nothing about now: a rate is the increase between samples of a recent window divided
by the time those samples really span. The caller keeps one `History` across its ticks (ma-top's dashboard, the
exporter's sampler); `findings()` records each snapshot in it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise

from pool.monitor.memory import MemoryHistory
from pool.monitor.snapshot import Snapshot

COUNTERS = ("retries", "throttled", "stalled", "failed")
"""The cumulative `ma:stats:<queue>` counters the history keeps."""


@dataclass(frozen=True)
class Sample:
    at: float
    """Epoch seconds the snapshot was taken."""
    counters: Mapping[str, Mapping[str, int]]
    """queue -> counter -> cumulative value."""


@dataclass(frozen=True)
class Increase:
    events: int
    """How many times the counter moved within the window (a reset counts from 0, as Prometheus does)."""
    span_s: float
    """The time the samples really span (at most the window; shorter while the history fills)."""

    def per_min(self, at_least_s: float = 60.0) -> float:
        """Events per minute over the span, never over less than `at_least_s`: two samples a second apart with
        one event between them are 1/min, not 60/min, until a whole minute has been watched."""
        return self.events / max(self.span_s, at_least_s) * 60


class History:
    def __init__(self, keep_s: float = 900.0, maxlen: int = 4096) -> None:
        """Samples younger than `keep_s` (the longest window asked for; the default covers Prometheus' 15 m
        rule), at most `maxlen` of them (ma-top at 0.2 s ticks keeps the last ~13 min)."""
        self.keep_s = keep_s
        self.samples: deque[Sample] = deque(maxlen=maxlen)
        self.redis_down_since: float | None = None
        """Time of the first snapshot that found Redis down, after the last one that found it up."""
        self.redis_last_up: float | None = None
        """Time of the last snapshot that found Redis up."""
        self._last_at: float | None = None
        self.memory = MemoryHistory()
        """Each process's RSS over the last hour, from its heartbeats (the memory-growth finding's evidence)."""

    def record(self, snapshot: Snapshot) -> None:
        """Add a snapshot; the same snapshot (or an older one) twice is a no-op, so every render may call it."""
        if self._last_at is not None and snapshot.taken_at <= self._last_at:
            return
        self._last_at = snapshot.taken_at
        self.memory.record(snapshot)
        if not snapshot.redis.up or "redis" in snapshot.errors:
            if self.redis_down_since is None:
                self.redis_down_since = snapshot.taken_at
            return  # no counters in a snapshot of a Redis that did not answer
        self.redis_down_since = None
        self.redis_last_up = snapshot.taken_at
        counters = {q.name: {c: q.counters.get(c, 0) for c in COUNTERS} for q in snapshot.queues}
        self.samples.append(Sample(snapshot.taken_at, counters))
        while self.samples and self.samples[0].at < snapshot.taken_at - self.keep_s:
            self.samples.popleft()

    def increase(self, queue: str, counter: str, window_s: float) -> Increase | None:
        """The counter's increase over the last `window_s` seconds of samples; None until the queue has two."""
        if not self.samples:
            return None
        start = self.samples[-1].at - window_s
        points: list[tuple[float, int]] = []
        for s in reversed(self.samples):  # newest first: only the window's samples are read
            if s.at < start:
                break
            if queue in s.counters:
                points.append((s.at, s.counters[queue][counter]))
        points.reverse()
        if len(points) < 2:
            return None
        events = 0
        for (_, before), (_, after) in pairwise(points):
            events += after - before if after >= before else after
        return Increase(events, points[-1][0] - points[0][0])
