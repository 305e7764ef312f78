"""A queue table for tests: the seven real queue names (so supervisord.conf runs unchanged) with
test handlers and short lock/stall timings so recovery is observable within seconds."""

from __future__ import annotations

from dataclasses import replace

from pool.queue_table import QUEUES as REAL
from tests.support import handlers

QUEUES = {
    name: replace(
        spec,
        handlers=handlers.HANDLERS,
        lock_duration_ms=4_000,
        stalled_interval_ms=2_000,
        backoff_ms=300,
        backoff_cap_ms=1_000,
        attempts=3,
        schedules=spec.schedules,
        limiter=None,
    )
    for name, spec in REAL.items()
}

REAL_FAST = {
    name: replace(
        spec, lock_duration_ms=3_000, stalled_interval_ms=2_000, backoff_ms=300, backoff_cap_ms=2_000
    )
    for name, spec in REAL.items()
}
"""The real handlers with short locks, so a killed worker's job is recovered within seconds, and short backoffs
(the real attempts: a job that keeps failing fails for good within about 25 s, not 16 min)."""

CHAOS = {
    name: replace(
        spec,
        lock_duration_ms=6_000,
        stalled_interval_ms=3_000,
        max_stalled_count=3,
        keep_completed={"age": 3600},
    )
    for name, spec in REAL.items()
}
"""The real handlers, attempts and backoffs (an outage of 15 s must not exhaust them), with locks short enough
that a killed worker's jobs are recovered within seconds; three stalls allowed (20 kills in a row). Completed
jobs are kept an hour whatever their number: the suite reads every job's hash after its scenario, and a count
cap (1,000 in the real table) would trim the background load's jobs whenever any other job completes."""
