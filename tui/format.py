"""Pure formatting of what ma-top shows: sparklines, ages, drain ETAs, clock times, the `--once` table."""

from __future__ import annotations

from datetime import datetime

from pool.monitor.collector import QueueStats, Snapshot
from pool.monitor.rates import BacklogHistory, backlog, drain_eta_s

SPARKS = "▁▁▂▃▄▅▆▇█"


def spark(values: tuple[int, ...], width: int = 12) -> str:
    """Newest-first per-minute values as a sparkline read left (oldest) to right (newest)."""
    points = list(reversed(values[:width]))
    top = max(points, default=0) or 1
    return "".join(SPARKS[min(8, round(v / top * 8))] for v in points)


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def last_known(snapshot: Snapshot) -> str:
    """`last known 42s ago` for a snapshot carrying the last answered queues (Redis down); empty when fresh."""
    if snapshot.known_at is None:
        return ""
    return f"last known {age(max(0.0, snapshot.taken_at - snapshot.known_at))} ago"


def drain_eta(q: QueueStats, history: BacklogHistory) -> str:
    """Time to empty the backlog at its net rate (arrivals against departures, last 5 minutes): `-` without a
    backlog, `…` while the history is too short to tell, `∞` when it grows or stands still."""
    jobs = backlog(q)
    if not jobs:
        return "-"
    rates = history.rates(q.name)
    if rates is None:
        return "…"
    eta = drain_eta_s(jobs, rates)
    return "∞" if eta is None else age(eta)


def when(ms: int) -> str:
    """Epoch milliseconds as local HH:MM:SS; 0 (never) as "-"."""
    return datetime.fromtimestamp(ms / 1000).strftime("%H:%M:%S") if ms else "-"


def plain(snapshot: Snapshot) -> str:
    """`ma-top --once`: the snapshot as a plain table for scripts and terminals without a TUI."""
    lines = [
        f"redis {'up' if snapshot.redis.up else 'DOWN ' + snapshot.redis.error}  workers {len(snapshot.workers)}"
    ]
    lines.append(
        f"{'queue':28} {'wait':>7} {'active':>7} {'delayed':>7} {'failed':>7} {'oldest':>8} {'workers':>7}"
    )
    for q in snapshot.queues:
        oldest = f"{q.oldest_waiting_s:.0f}s" if q.oldest_waiting_s is not None else "-"
        lines.append(
            f"{q.name:28} {q.counts['waiting']:>7} {q.counts['active']:>7} {q.counts['delayed']:>7} "
            f"{q.counts['failed']:>7} {oldest:>8} {q.workers:>7}"
        )
    return "\n".join(lines)
