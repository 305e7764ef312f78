"""How a flow looks in ma-top's job detail: SVG snapshots at 120x36, time frozen, the flow fixed (an in-memory
source). Update deliberately with `pytest tests/test_top_flows_snapshots.py --snapshot-update` and review."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from textual.pilot import Pilot

from pool.monitor.findings import Thresholds
from tests.support.fake_source import T0
from tests.support.flows import PARENTS, PARTS, blocked_flow_source
from tests.support.pilot import settle
from tui.app import MaTop
from tui.screens import JobScreen


class FrozenTop(MaTop):
    def now(self) -> datetime:
        return datetime.fromtimestamp(T0)


def job(queue: str, job_id: str) -> Callable[[Pilot[None]], Awaitable[None]]:
    """Once the first tick is in, open this job's detail and wait until its flow has loaded."""

    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot)
        await pilot.app.push_screen(JobScreen(queue, job_id))
        await settle(pilot)

    return run_before


def test_a_parent_blocked_by_a_failed_child_looks_as_approved(snap_compare):
    app = FrozenTop(source=blocked_flow_source(), refresh_s=3600, thresholds=Thresholds())
    assert snap_compare(app, run_before=job(PARENTS, "p-1"), terminal_size=(120, 36))


def test_the_failed_child_holding_its_parent_looks_as_approved(snap_compare):
    app = FrozenTop(source=blocked_flow_source(), refresh_s=3600, thresholds=Thresholds())
    assert snap_compare(app, run_before=job(PARTS, "c-2"), terminal_size=(120, 36))
