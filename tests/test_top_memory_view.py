"""The processes view with every host's RSS and CPU from the heartbeats and an hour of RSS as a sparkline:
what it shows (Pilot, over the in-memory source) and how it looks (an SVG snapshot, time frozen). Update the
picture deliberately with `pytest tests/test_top_memory_view.py --snapshot-update` and review the SVG."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pool.monitor.findings import Thresholds
from pool.monitor.snapshot import RedisHealth, Snapshot, WorkerBeat
from tests.support.fake_source import T0, FakeSource, process, queue_stats
from tests.support.pilot import settle
from tests.support.top import rows
from tui.app import MaTop

MIB = 2**20
HOST_A = "unix:///srv/host-a/var/supervisor.sock"
HOST_B = "http://host-b:9001"
UP = RedisHealth(True, policy="noeviction")


def beat(host: str, pid: int, name: str, at: float, rss_mib: float, cpu: float) -> WorkerBeat:
    group = name.split(":")[0]
    return WorkerBeat(
        host,
        pid,
        group,
        name,
        10,
        (),
        100,
        0,
        0,
        int(T0 - 7200) * 1000,
        int(at * 1000),
        int(rss_mib * MIB),
        cpu,
    )


def beats(at: float) -> tuple[WorkerBeat, ...]:
    """An hour in the life of two hosts: host-a's billing-usage slot leaks 4 MiB a minute; host-b's is flat."""
    minutes = (at - (T0 - 3600)) / 60
    return (
        beat("host-a", 4242, "billing-usage:billing-usage_00", at, 60 + 4 * minutes, 12.5),
        beat("host-b", 5151, "billing-usage:billing-usage_00", at, 96 + (minutes % 3) / 10, 3.0),
    )


class HourSource(FakeSource):
    """The in-memory source at the frozen now, whose heartbeats come from `beats`."""

    async def fetch(self) -> Snapshot:
        return Snapshot(T0, tuple(self.queues), beats(T0), UP)


class FrozenTop(MaTop):
    def now(self) -> datetime:
        return datetime.fromtimestamp(T0)


def hour_top() -> FrozenTop:
    source = HourSource(
        queues=[queue_stats("billing-usage", workers=2)],
        procs=[
            process(HOST_A, "billing-usage", 0, 4242),
            process(HOST_A, "billing-usage", 1, 0, "FATAL"),
            process(HOST_A, "identity-events", 0, 7777),  # running, no heartbeat yet: local psutil figures
            process(HOST_B, "billing-usage", 0, 5151),
        ],
    )
    app = FrozenTop(source=source, refresh_s=60, thresholds=Thresholds())
    for i in range(720):  # the hour ma-top watched before this picture, one beat every 5 s
        at = T0 - 3600 + i * 5
        app.history.record(Snapshot(at, (), beats(at), UP))
    return app


async def test_every_hosts_processes_show_rss_and_cpu_from_their_heartbeats_with_an_hour_of_rss():
    app = hour_top()
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        shown = {(r[9], r[0]): r for r in rows(app)}
    a = shown[("host-a", "billing-usage:billing-usage_00")]
    b = shown[("host-b:9001", "billing-usage:billing-usage_00")]
    assert (a[6], a[8]) == ("300", "12"), "host-a's heartbeat: 60 + 4 MiB x 60 minutes, 12.5% CPU"
    assert (b[6], b[8]) == ("96", "3"), "host-b's figures come from its heartbeat, not from this host"
    assert a[7][0] == "▁" and a[7][-1] == "█" and list(a[7]) == sorted(a[7]), "a leak climbs"
    assert set(b[7]) == {"▁"}, "flat stays low"
    local = shown[("host-a", "identity-events:identity-events_00")]
    assert (local[6], local[7], local[8]) == ("64", "", "1"), "no heartbeat: psutil's figures, no history"
    fatal = shown[("host-a", "billing-usage:billing-usage_01")]
    assert (fatal[6], fatal[7], fatal[8]) == ("-", "", "-")
    kinds = [(f.kind, f.subject) for f in app.state.findings]
    assert ("memory-growth", "host-a:billing-usage:billing-usage_00") in kinds
    assert ("memory-growth", "host-b:billing-usage:billing-usage_00") not in kinds


def test_processes_view_with_rss_sparklines_looks_as_approved(snap_compare):
    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)

    assert snap_compare(hour_top(), run_before=run_before, terminal_size=(120, 36))


class DownSource(HourSource):
    """Redis answers once, then is down: the view keeps the last known beats, aged."""

    answered = False

    async def fetch(self) -> Snapshot:
        if not self.answered:
            self.answered = True
            return await super().fetch()
        return Snapshot(T0 + 60, (), (), RedisHealth(False, error="ConnectionError"), {"redis": "refused"})


async def test_while_redis_is_down_no_heartbeats_rss_or_cpu_is_shown_as_current():
    source = DownSource(
        queues=[queue_stats("billing-usage", workers=2)], procs=[process(HOST_A, "billing-usage", 0, 4242)]
    )
    app = FrozenTop(source=source, refresh_s=60, thresholds=Thresholds())
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        (fresh,) = rows(app)
        assert (fresh[6], fresh[8]) == ("300", "12"), "Redis up: the heartbeat's figures"
        await app.refresh_now()  # Redis down now: the last known beats stay, their figures are a minute old
        await settle(pilot)
        assert app.state.snapshot is not None and app.state.snapshot.known_at == T0
        (stale,) = rows(app)
    assert (stale[6], stale[8]) == ("64", "1"), (
        "measured on this host now (psutil), not the stale beat's 300/12"
    )
