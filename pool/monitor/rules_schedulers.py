"""A job scheduler that missed its run: part of `pool.monitor.findings`' rule set.

A scheduler's next job sits in `delayed` until due; a worker of the queue then promotes and runs it, and the
scheduler moves on to the run after. A next run overdue by more than one interval (the run after it is due too)
means no worker took it: none is running, the queue is paused, or the next job is gone and the scheduler stopped.
Measured on Redis' clock, from this tick's next run: it clears on the first snapshot after a worker takes the run.
"""

from __future__ import annotations

from collections.abc import Iterator

from pool.monitor.finding import Finding, age, clock
from pool.monitor.schedulers import Run, Scheduler, duration
from pool.monitor.snapshot import Snapshot


def scheduler_missed(snapshot: Snapshot) -> Iterator[Finding]:
    for s in snapshot.schedulers:
        if not s.missed:
            continue
        yield Finding(
            "warning",
            "scheduler-missed",
            s.queue,
            f"scheduler {s.id} missed its run due {clock(s.next_ms / 1000)}: {age(s.late_ms / 1000)} late "
            f"({s.schedule}); {_why(snapshot, s)}",
            f"next run {_run(s.next_run)}; last run {_run(s.last_run) if s.last_run else 'none yet'}; "
            f"late {age(s.late_ms / 1000)} > interval {duration(s.interval_ms / 1000)}",
            f"ma-top 7 (schedulers; enter: the last run's job), 3 (is a slot of {s.queue} running?); "
            "paused: space on its row in ma-top 1 resumes it",
            goto="schedulers",
        )


def _why(snapshot: Snapshot, s: Scheduler) -> str:
    q = snapshot.queue(s.queue)
    if s.next_run is not None and s.next_run.outcome == "gone":
        return "its next run's job is gone, so the scheduler makes no more runs (upsert it again)"
    if s.next_run is not None and s.next_run.outcome in ("active", "completed", "failed"):
        return "a worker took that run but the scheduler did not move on (upsert it again; the worker's log?)"
    if q is not None and q.paused:
        return "the queue is paused"
    if q is not None and not q.workers:
        return "no worker runs the queue"
    return "its workers have not taken it (busy, rate limited, or stuck?)"


def _run(run: Run | None) -> str:
    if run is None:
        return "not read yet"
    at = f" {clock(run.at_ms / 1000)}" if run.at_ms else ""
    return f"{run.job_id or '-'} {run.outcome}{at}"
