"""How ma-top looks: SVG snapshots of each view at 120x36, time frozen, data fixed.

The screens only render what their DataSource gives; here the live source over a seeded Valkey answers
with a fixed Snapshot and fixed supervisord processes (the fetcher is swapped, as in asynq's dash tests), so
a look change shows as a snapshot diff. Update deliberately with
`pytest tests/test_top_snapshots.py --snapshot-update` and review the SVGs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

import pytest
from redis.asyncio import Redis
from textual.pilot import Pilot

from pool.monitor.snapshot import BulkJob, QueueStats, RedisHealth, Snapshot, WorkerBeat
from pool.monitor.source import LiveSource
from pool.monitor.supervisor_source import ProcessInfo
from tests.support.pilot import settle
from tui.app import MaTop

T0 = 1_795_000_000.0  # frozen "now", epoch seconds


def _queue(
    name: str,
    waiting: int,
    failed: int,
    workers: int,
    *,
    handled: bool = True,
    paused: bool = False,
    done: tuple[int, ...] = (3, 5, 8, 13, 8, 5),
) -> QueueStats:
    return QueueStats(
        name,
        {
            "waiting": waiting,
            "active": 1 if workers else 0,
            "delayed": 2,
            "prioritized": 0,
            "failed": failed,
            "completed": 120,
            "waiting-children": 0,
        },
        paused,
        0,
        42.0 if waiting else None,
        1200,
        failed,
        done,
        (0, 1, 0, 2, 0, 0),
        {"retries": 4},
        workers,
        handled,
    )


SNAPSHOT = Snapshot(
    T0,
    (
        _queue("billing-usage", 450, 3, 2),
        _queue("identity-events", 0, 0, 1),
        _queue("product-x.jobs", 12, 0, 0, handled=False),
        _queue("task-notifications", 5, 1, 1, paused=True),
    ),
    (
        WorkerBeat(
            "host-a",
            4242,
            "billing-usage",
            "billing-usage:billing-usage_00",
            10,
            ("17",),
            1200,
            3,
            0,
            int(T0 * 1000) - 3_600_000,
            int(T0 * 1000),
        ),
    ),
    RedisHealth(
        True,
        used_memory=52 * 2**20,
        maxmemory=2**30,
        clients=14,
        ops_per_sec=230,
        evicted_keys=0,
        policy="allkeys-lru",
        version="8.1.8",
        connection_failures=2,
    ),
    {},
    (
        BulkJob(
            "bulk-7", "31", "bulk.suspend", "running", 500, 120, 118, 2, 12.5, T0 - 60, T0 - 3, "host-a", 4242
        ),
    ),
)


class FixedSource(LiveSource):
    """Reads jobs, events and failures from the seeded Valkey; the snapshot and processes are fixed."""

    shown_processes: tuple[ProcessInfo, ...] = ()

    async def fetch(self) -> Snapshot:
        return SNAPSHOT

    async def processes(self) -> tuple[list[ProcessInfo], dict[str, str]]:
        return list(self.shown_processes), {}


class FrozenTop(MaTop):
    def now(self) -> datetime:
        return datetime.fromtimestamp(T0)


def after(*keys: str) -> Callable[[Pilot[None]], Awaitable[None]]:
    """Once the first ticks are in, press `keys`, and once what they started has loaded, take the picture."""

    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot)
        await pilot.press(*keys)
        await settle(pilot)

    return run_before


@pytest.fixture
def app(valkey, tmp_path: Path) -> FrozenTop:
    import redis as sync_redis

    sync_redis.Redis.from_url(valkey.url).flushdb()  # the first screen's events strip: no other test's events
    redis = Redis.from_url(valkey.url, decode_responses=True)  # connects inside the snapshot's own loop
    return FrozenTop(source=FixedSource(redis, journal_path=tmp_path / "audit.log"), refresh_s=60)


@pytest.mark.parametrize(
    "keys", [[], ["4"], ["6"], ["question_mark"]], ids=["queues", "redis", "bulk", "help"]
)
def test_view_looks_as_approved(snap_compare, app, keys):
    assert snap_compare(app, run_before=after(*keys), terminal_size=(120, 36))


def test_processes_view_looks_as_approved(snap_compare, app):
    start = int(T0) - 7200
    app.source.shown_processes = (
        ProcessInfo(
            "unix:///srv/a/var/supervisor.sock",
            "billing-usage",
            "billing-usage_00",
            "RUNNING",
            999_991,
            start,
            int(T0),
            "pid 999991, uptime 2:00:00",
        ),
        ProcessInfo(
            "unix:///srv/a/var/supervisor.sock",
            "billing-usage",
            "billing-usage_01",
            "FATAL",
            0,
            start,
            int(T0),
            "Exited too quickly",
            78,
            "Exited too quickly (process log may have details)",
        ),
    )
    assert snap_compare(app, run_before=after("3"), terminal_size=(120, 36))


@pytest.fixture
def seeded(valkey) -> None:
    """Fixed Redis content for the views that read Redis directly: events, failed jobs (fixed timestamps)."""
    import json as _json

    import redis as sync_redis

    r = sync_redis.Redis.from_url(valkey.url, decode_responses=True)
    r.flushdb()
    t = int(T0 * 1000)
    for i, (kind, queue, message) in enumerate(
        [
            ("throttled", "billing-usage", "Billing usage aggregation throttled"),
            ("throttled", "billing-usage", "Billing usage aggregation throttled"),
            ("stalled", "identity-events", "job 7 stalled and was moved back to wait"),
            ("redis-recovered", "billing-invoice", "Redis connection recovered after 9.8s"),
        ]
    ):
        r.xadd(
            "ma:events",
            {
                "ts": str(t - 60_000 + i * 1000),
                "kind": kind,
                "queue": queue,
                "message": message,
                "host": "host-a",
                "pid": "4242",
            },
        )
    trace = _json.dumps(
        [
            'Traceback (most recent call last):\n  File "/srv/pool/dispatch.py", line 90, in __call__\n'
            "    raise UnrecoverableError(reason)\nUnrecoverableError"
        ]
    )
    for i in range(3):
        key = f"bull:billing-usage:{100 + i}"
        r.hset(
            key,
            mapping={
                "name": "tenant.created",
                "data": _json.dumps({"organizationId": f"org_{i}"}),
                "opts": "{}",
                "timestamp": str(t - 3_600_000),
                "atm": "1",
                "processedOn": str(t - 60_000),
                "finishedOn": str(t - 50_000 + i),
                "stacktrace": trace,
                "failedReason": f"tenant org_x_t{i} is not in organization org_{i}; refused",
            },
        )
        r.zadd("bull:billing-usage:failed", {str(100 + i): t - 50_000 + i})
    r.close()


def test_events_view_looks_as_approved(snap_compare, app, seeded):
    assert snap_compare(app, run_before=after("2"), terminal_size=(120, 36))


def test_failures_view_looks_as_approved(snap_compare, app, seeded):
    assert snap_compare(app, run_before=after("5"), terminal_size=(120, 36))


def test_queue_jobs_view_looks_as_approved(snap_compare, app, seeded):
    # billing-usage is the first row and has failed jobs: it opens on its failed jobs (the seeded ones)
    assert snap_compare(app, run_before=after("enter"), terminal_size=(120, 36))


# -- the first screen with findings, the recent events strip and the header's process count -------------

SOCK = "unix:///srv/a/var/supervisor.sock"


def _processes() -> tuple[ProcessInfo, ...]:
    start = int(T0) - 7200
    return (
        ProcessInfo(
            SOCK, "billing-usage", "billing-usage_00", "RUNNING", 999_991, start, int(T0), "pid 999991"
        ),
        ProcessInfo(
            SOCK, "billing-usage", "billing-usage_01", "FATAL", 0, start, int(T0), "Exited too quickly", 78
        ),
        ProcessInfo(
            SOCK, "identity-events", "identity-events_00", "RUNNING", 999_992, start, int(T0), "pid 1"
        ),
    )


def test_first_screen_with_findings_recent_events_and_the_process_count_looks_as_approved(
    snap_compare, app, seeded
):
    source: FixedSource = app.source
    source.shown_processes = _processes()
    assert snap_compare(app, run_before=after(), terminal_size=(120, 36))


def test_first_screen_with_a_finding_selected_looks_as_approved(snap_compare, app, seeded):
    source: FixedSource = app.source
    source.shown_processes = _processes()
    assert snap_compare(app, run_before=after("f", "down"), terminal_size=(120, 36))
