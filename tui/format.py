"""Pure formatting of what ma-top shows: sparklines, ages, drain ETAs, clock times, the `--once` table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pool.monitor.plain_text import age as age  # the data layer's, shared with the --once table
from pool.monitor.plain_text import drain_eta as drain_eta
from pool.monitor.plain_text import plain as plain  # the --once table, in the data layer
from pool.monitor.snapshot import Snapshot

SPARKS = "▁▁▂▃▄▅▆▇█"


def spark(values: tuple[int, ...], width: int = 12) -> str:
    """Newest-first per-minute values as a sparkline read left (oldest) to right (newest)."""
    points = list(reversed(values[:width]))
    top = max(points, default=0) or 1
    return "".join(SPARKS[min(8, round(v / top * 8))] for v in points)


def spark_level(values: Sequence[int | None], floor_pct: float = 10.0) -> str:
    """Oldest-first levels (an RSS) as a sparkline of their change: the lowest is ▁ and a rise of `floor_pct`
    percent of the highest (or the whole range, if larger) fills the cell, so noise looks flat and growth climbs;
    a blank where a value is unknown (before the process started)."""
    known = [v for v in values if v is not None]
    if not known:
        return ""
    low = min(known)
    span = max(max(known) - low, max(known) * floor_pct / 100) or 1
    return "".join(" " if v is None else SPARKS[1 + round((v - low) / span * 7)] for v in values)


def last_known(snapshot: Snapshot) -> str:
    """`last known 42s ago` for a snapshot carrying the last answered queues (Redis down); empty when fresh."""
    if snapshot.known_at is None:
        return ""
    return f"last known {age(max(0.0, snapshot.taken_at - snapshot.known_at))} ago"


def when(ms: int) -> str:
    """Epoch milliseconds as local HH:MM:SS; 0 (never) as "-"."""
    return datetime.fromtimestamp(ms / 1000).strftime("%H:%M:%S") if ms else "-"


BROKEN_STATES = ("FATAL", "BACKOFF", "EXITED", "UNKNOWN")
"""supervisord states that mean a process died or cannot start: red in the header (the rest not RUNNING,
STOPPED, STARTING, STOPPING, are yellow: stopped on purpose, or on their way)."""


def procs_summary(states: list[str]) -> str:
    """The header's `procs 12/14 running, 2 FATAL`: red when one is broken, yellow when one is merely not
    running, plain when all run; empty when no supervisord process is known (none read)."""
    if not states:
        return ""
    running = states.count("RUNNING")
    others = sorted({s for s in states if s != "RUNNING"}, key=lambda s: (s not in BROKEN_STATES, s))
    text = f"procs {running}/{len(states)} running" + "".join(f", {states.count(s)} {s}" for s in others)
    if not others:
        return text
    color = "red" if others[0] in BROKEN_STATES else "yellow"
    return f"[{color}]{text}[/{color}]"
