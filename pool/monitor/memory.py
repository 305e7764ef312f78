"""Each pool process's RSS over the last hour, from its heartbeats, and the test for steady growth.

Every slot's heartbeat carries its RSS (pool/telemetry.py), so this works for the processes of every host, not
only ma-top's own; the first beat read of a process also brings its own trail of the last hour (one point a
minute), so a dashboard opened now, or `ma-top --once`, judges the hour at once. One series per process life: a restarted slot (a new pid, or the same pid with a new start
time) starts a new series, so a restart never reads as a drop or a jump. A point is added per beat, not per
snapshot (a beat read by ten ticks is one point), and a series whose process has not beaten for the hour is
dropped, so the memory held is bounded by the processes alive in the last hour.

Steady growth (`growth`) is judged over a recent window after the process's warm-up: the RSS at the window's
end against its start, and the window cut into `STEPS` equal sub-intervals of which at least `STEADY` must end
higher than they began. A one-off step (a cache filled once) rises in one sub-interval; a GC saw-tooth rises and
falls in turn; neither is steady. When the growth stops, the window's figures fall below the threshold within
one window and the finding clears by itself.
"""

from __future__ import annotations

import socket
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise, takewhile

from pool.monitor.snapshot import Snapshot, WorkerBeat
from pool.monitor.supervisor_source import ProcessInfo, endpoint_label

KEEP_S = 3600.0
"""How long a series is kept: ma-top's sparkline shows the last hour."""
MAX_POINTS = 3600
"""Points per series at most (one a second for an hour; the default 5 s beat keeps 720)."""
STEPS = 6
"""Sub-intervals a growth window is cut into."""
STEADY = 4
"""Sub-intervals that must end higher than they began for growth to be steady ("most of them")."""
FALL_SHARE = 0.25
"""The most RSS may drop between two beats of a steady window, as a share of the window's growth: a leak barely
ever gives memory back, a collector's saw-tooth gives back what it took."""


@dataclass
class Series:
    host: str
    pid: int
    process: str
    queue: str
    started: float
    """Epoch seconds the process started (from its heartbeat)."""
    points: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=MAX_POINTS))
    """(epoch seconds of the beat, RSS bytes), oldest first."""

    @property
    def label(self) -> str:
        """`host:process` (`host:pid` for a process without a name), the subject of its findings."""
        return f"{self.host}:{self.process or self.pid}"

    def rss_at(self, at: float) -> int | None:
        """The RSS of the last beat at or before `at`; None before the first point."""
        i = bisect_right(self.points, (at, 2**63))
        return self.points[i - 1][1] if i else None

    def trail(self, now: float, width: int, span_s: float = KEEP_S) -> list[int | None]:
        """`width` RSS values evenly spaced over the last `span_s` up to `now`, oldest first; None where the
        process had not beaten yet (before its series starts) — for a sparkline."""
        step = span_s / width
        return [self.rss_at(now - span_s + step * (i + 1)) for i in range(width)]


@dataclass(frozen=True)
class Growth:
    start_rss: int
    end_rss: int
    span_s: float
    rising: int
    """Sub-intervals (of `STEPS`) that ended higher than they began."""
    fall: int
    """The largest drop between two consecutive beats of the window (bytes)."""

    @property
    def pct(self) -> float:
        return (self.end_rss - self.start_rss) / self.start_rss * 100 if self.start_rss else 0.0

    @property
    def steady(self) -> bool:
        return self.rising >= STEADY and self.fall <= (self.end_rss - self.start_rss) * FALL_SHARE


def growth(series: Series, window_s: float, warmup_s: float) -> Growth | None:
    """The growth over the last `window_s` of beats after the first `warmup_s` of the process's life; None
    while the series does not yet cover a whole window after warm-up (a young process is not judged)."""
    points = series.points
    if len(points) < 2 or window_s <= 0:
        return None
    end = points[-1][0]
    start = end - window_s
    first = series.rss_at(start)
    if first is None or start < series.started + warmup_s:
        return None
    values = [series.rss_at(start + window_s * i / STEPS) or first for i in range(STEPS + 1)]
    rising = sum(after > before for before, after in pairwise(values))
    window = list(takewhile(lambda point: point[0] >= start, reversed(points)))  # newest first: no full walk
    fall = max(
        (before - after for after, before in pairwise([rss for _, rss in window] + [first])), default=0
    )
    return Growth(first, points[-1][1], window_s, rising, max(0, fall))


class MemoryHistory:
    def __init__(self, keep_s: float = KEEP_S) -> None:
        self.keep_s = keep_s
        self.series: dict[tuple[str, int], Series] = {}
        """(host, pid) -> the series of that process's current life."""

    def record(self, snapshot: Snapshot) -> None:
        """Add each heartbeat's RSS (once per beat); forget processes silent for longer than `keep_s`."""
        for beat in snapshot.workers:
            if beat.rss <= 0:
                continue  # a pool older than the field, or the OS would not tell
            key = (beat.host, beat.pid)
            series = self.series.get(key)
            started = beat.started / 1000
            if series is None or series.started != started:
                series = self.series[key] = Series(beat.host, beat.pid, beat.process, beat.queue, started)
                # the process's own trail: a dashboard opened now sees its last hour at once
                series.points.extend((ms / 1000, rss) for ms, rss in beat.rss_trail if rss > 0)
            at = beat.last_beat / 1000
            if series.points and at <= series.points[-1][0]:
                continue  # the same beat read again by a later tick
            series.points.append((at, beat.rss))
            while series.points[0][0] < at - self.keep_s:
                series.points.popleft()
        horizon = snapshot.taken_at - self.keep_s
        for key in [k for k, s in self.series.items() if not s.points or s.points[-1][0] < horizon]:
            del self.series[key]

    def of(self, beat: WorkerBeat) -> Series | None:
        series = self.series.get((beat.host, beat.pid))
        return series if series is not None and series.started == beat.started / 1000 else None


def beat_of(process: ProcessInfo, beats: Iterable[WorkerBeat]) -> WorkerBeat | None:
    """The heartbeat of a supervisord process: same pid and (when the beat names one) same `group:name`; when
    several hosts have such a pid (containers), the one on the endpoint's host (a unix socket is this host)."""
    if not process.pid:
        return None
    mine = [b for b in beats if b.pid == process.pid and b.process in (process.full_name, "")]
    if len(mine) > 1:
        host = (
            socket.gethostname()
            if process.endpoint.startswith("unix://")
            else endpoint_label(process.endpoint).rsplit(":", 1)[0]
        )
        mine = [b for b in mine if b.host == host]
    return mine[0] if len(mine) == 1 else None
