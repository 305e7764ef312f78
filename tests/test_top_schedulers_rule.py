"""The scheduler-missed rule on recorded snapshots: it appears once the next run is late by more than one interval
(every, or a cron pattern's own gap), says why, and clears on the first snapshot after the run is taken."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

from pool.monitor.findings import History, badges, findings
from pool.monitor.schedulers import Run, Scheduler, SchedulerBook, interval_ms
from pool.monitor.snapshot import RedisHealth, Snapshot
from tests.support.fake_source import queue_stats

NEXT_MS = 1_794_999_600_000
"""The late run's time: on the hour (UTC), a fire time of the cron patterns below too."""
Q = "task-notifications"


def scheduler(
    late_s: float, *, every_ms: int = 300_000, pattern: str = "", next_outcome: str = "delayed"
) -> Scheduler:
    next_ms = NEXT_MS
    return Scheduler(
        Q,
        "task-due-soon",
        "task.due-soon",
        pattern,
        every_ms,
        "",
        next_ms,
        next_ms + late_s * 1000,
        interval_ms(pattern, every_ms, "", next_ms),
        iterations=7,
        next_run=Run(f"repeat:task-due-soon:{next_ms}", next_outcome, next_ms),
        last_run=Run(f"repeat:task-due-soon:{next_ms - every_ms}", "completed", next_ms - every_ms + 40),
    )


def snapshot(*schedulers: Scheduler, workers: int = 0, paused: bool = False) -> Snapshot:
    return Snapshot(
        max(s.seen_at_ms for s in schedulers) / 1000,
        (queue_stats(Q, workers=workers, paused=paused, delayed=1),),
        (),
        RedisHealth(True, policy="noeviction"),
        schedulers=schedulers,
    )


def missed(snap: Snapshot, history: History | None = None) -> list:
    return [f for f in findings(snap, history or History()) if f.kind == "scheduler-missed"]


def test_a_run_late_by_more_than_its_interval_with_no_worker_is_missed_and_says_why():
    (found,) = missed(snapshot(scheduler(11 * 60)))
    assert found.severity == "warning" and found.subject == Q and found.goto == "schedulers"
    assert "scheduler task-due-soon missed its run due " in found.cause
    assert ": 11m late (every 5m); no worker runs the queue" in found.cause
    assert "next run repeat:task-due-soon:" in found.evidence and " delayed " in found.evidence
    assert "last run repeat:task-due-soon:" in found.evidence and " completed " in found.evidence
    assert "late 11m > interval 5m" in found.evidence and "ma-top 7" in found.action
    assert "MISSED" in badges(findings(snapshot(scheduler(11 * 60)), History()), Q)


def test_a_run_late_by_less_than_one_interval_is_not_missed_a_worker_may_be_about_to_take_it():
    assert not missed(snapshot(scheduler(4 * 60)))
    assert not missed(snapshot(scheduler(5 * 60)))  # exactly one interval: the run after it is only just due


def test_missed_clears_on_the_first_snapshot_after_a_worker_takes_the_run():
    history = History()
    late = scheduler(11 * 60)
    assert missed(snapshot(late), history)
    # the worker took it: the scheduler moved on to the next run, in the future
    ran = replace(
        late,
        next_ms=int(late.seen_at_ms) + 60_000,
        last_run=late.next_run,
        next_run=Run("repeat:x", "delayed", 0),
    )
    assert not missed(snapshot(ran, workers=1), history)


def test_the_cause_names_a_paused_queue_a_stopped_scheduler_or_one_that_did_not_move_on():
    (paused,) = missed(snapshot(scheduler(11 * 60), workers=2, paused=True))
    assert paused.cause.endswith("; the queue is paused")
    (stopped,) = missed(snapshot(scheduler(11 * 60, next_outcome="gone"), workers=2))
    assert "its next run's job is gone, so the scheduler makes no more runs" in stopped.cause
    (busy,) = missed(snapshot(scheduler(11 * 60), workers=2))
    assert "its workers have not taken it" in busy.cause
    (stuck,) = missed(snapshot(scheduler(11 * 60, next_outcome="completed"), workers=2))
    assert "a worker took that run but the scheduler did not move on" in stuck.cause


def test_a_cron_patterns_interval_is_its_own_gap_from_the_next_run_to_the_one_after():
    hourly = scheduler(50 * 60, every_ms=0, pattern="0 * * * *")
    assert hourly.interval_ms == 3_600_000 and not missed(snapshot(hourly))
    (found,) = missed(snapshot(scheduler(61 * 60, every_ms=0, pattern="0 * * * *")))
    assert "(cron 0 * * * *)" in found.cause
    friday_9 = datetime(2026, 11, 27, 9, 0, tzinfo=ZoneInfo("Europe/Paris"))  # a Friday
    weekdays = interval_ms("0 9 * * 1-5", 0, "Europe/Paris", int(friday_9.timestamp() * 1000))
    assert weekdays == 3 * 86_400_000  # Monday 09:00: a weekend is no missed run
    every_10s = interval_ms("*/10 * * * * *", 0, "", int(friday_9.timestamp() * 1000))
    assert every_10s == 10_000  # six fields: seconds first, as Node's cron-parser reads them
    assert (
        interval_ms("not a cron", 0, "", NEXT_MS) == 0
        and interval_ms("0 9 * * *", 0, "Mars/Olympus", NEXT_MS) == 0
    )


def test_a_scheduler_whose_details_were_not_read_is_listed_but_never_claimed_missed():
    book = SchedulerBook()
    (s,) = book.current({(Q, "task-due-soon"): NEXT_MS}, NEXT_MS + 3_600_000)
    assert (s.queue, s.id, s.interval_ms, s.last_run) == (Q, "task-due-soon", 0, None)
    assert s.late_ms == 3_600_000 and not s.missed and not missed(snapshot(s))
