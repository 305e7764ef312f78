"""The data layer's plain text, shared by ma-top, `ma-top --once` and the incident report (pool/monitor/report.py):
the queue table as `--once` prints it, and a coalesced event row as text (events and what they stand for kept
apart, the real span, every process). No Textual here."""

from __future__ import annotations

from pool.monitor.events import EventRow
from pool.monitor.rates import backlog, backlog_samples, drain_eta_s, net_rate
from pool.monitor.recent import RecentCounts
from pool.monitor.snapshot import QueueStats, Snapshot


def plain(snapshot: Snapshot, window_s: float = 300.0) -> str:
    """`ma-top --once`: the snapshot as a plain table for scripts and terminals without a TUI (the drain ETA over
    `window_s`, as the queues view shows it)."""
    lines = [
        f"redis {'up' if snapshot.redis.up else 'DOWN ' + snapshot.redis.error}  workers {len(snapshot.workers)}"
    ]
    lines.append(
        f"{'queue':28} {'wait':>7} {'active':>7} {'delayed':>7} {'failed':>7} {'oldest':>8} {'workers':>7} {'eta':>6}"
    )
    for q in snapshot.queues:
        oldest = f"{q.oldest_waiting_s:.0f}s" if q.oldest_waiting_s is not None else "-"
        lines.append(
            f"{q.name:28} {q.counts['waiting']:>7} {q.counts['active']:>7} {q.counts['delayed']:>7} "
            f"{q.counts['failed']:>7} {oldest:>8} {q.workers:>7} {drain_eta(q, snapshot.recent, window_s):>6}"
        )
    return "\n".join(lines)


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def drain_eta(q: QueueStats, recent: RecentCounts, window_s: float) -> str:
    """Time to empty the backlog at its net rate (arrivals against departures over `window_s`, from the pool's
    backlog samples in Redis, the same the backlog-growing finding reads): `-` without a backlog, `∞` without a
    worker or when it grows or stands still, `…` while the samples are too few to tell."""
    jobs = backlog(q)
    if not jobs:
        return "-"
    if not q.workers:
        return "∞"
    rates = net_rate(backlog_samples(recent, q.name), window_s)
    if rates is None:
        return "…"
    eta = drain_eta_s(jobs, rates)
    return "∞" if eta is None else age(eta)


WHERE_WIDTH = 28


def duration(seconds: float) -> str:
    """`0s`, `45s`, `12m`, `3h`: whole units, rounded."""
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def times(row: EventRow) -> str:
    """`×3 in 42s`: how many events (stream records), over the span from the first's start to the last's end.
    One event over a span of its own (a throttle window) shows `×1 in 30s`; events within a second, `×2`;
    one instant event, nothing."""
    if row.span_s < 1:
        return f"×{row.events}" if row.events > 1 else ""
    return f"×{row.events} in {duration(row.span_s)}"


def total(row: EventRow) -> str:
    """`648 throttles`, `2,999 failed items`: the occurrences a counted kind's events stand for."""
    if row.noun is None or row.total is None:
        return ""
    return f"{row.total:,} {row.noun}"


def where(row: EventRow, width: int = WHERE_WIDTH) -> str:
    """Every host:pid, compact (`h1:101,102 h2:7`); when that does not fit, `3 procs on 2 hosts`."""
    hosts = row.where()
    text = " ".join(f"{host}:{','.join(pids)}" for host, pids in hosts.items())
    if len(text) <= width:
        return text
    procs = sum(len(pids) for pids in hosts.values())
    if len(hosts) == 1:
        return f"{next(iter(hosts))}: {procs} procs"[:width]
    return f"{procs} procs on {len(hosts)} hosts"
