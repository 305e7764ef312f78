"""Driving ma-top with Pilot against an in-memory DataSource (the key tests: tests/test_top_*keys.py)."""

from __future__ import annotations

from textual.pilot import Pilot

from pool.monitor.findings import Thresholds
from tests.support.fake_source import FakeSource, process, queue_stats
from tests.support.pilot import settle
from tui.app import MaTop

SOCK = "unix:///srv/host-a/var/supervisor.sock"


def top(source: FakeSource, *, read_only: bool = False) -> MaTop:
    # refresh_s: only the first tick runs on its own; the rest happen when a test's action refreshes
    return MaTop(
        source=source,
        refresh_s=3600,
        read_only=read_only,
        thresholds=Thresholds(),
    )


async def keys(pilot: Pilot[None], *pressed: str) -> None:
    """Press, then wait until what the keys started has finished."""
    await pilot.press(*pressed)
    await settle(pilot)


def with_processes() -> FakeSource:
    return FakeSource(
        queues=[queue_stats("identity-events")],
        procs=[
            process(SOCK, "billing-usage", 0, 101),
            process(SOCK, "billing-usage", 1, 102),
            process(SOCK, "identity-events", 0, 103),
        ],
    )
