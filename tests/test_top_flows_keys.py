"""ma-top's flow keys against an in-memory source (tests/support/flows.py): a parent held in waiting-children
by a failed child, browsed, opened, its children opened with `c` + enter and the parent again with `u`."""

from __future__ import annotations

import dataclasses
from typing import Any

from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from pool.monitor.findings import Thresholds
from pool.monitor.flows import ChildGroup, Flow, FlowJob
from tests.support.fake_source import FakeSource, job_rows, queue_stats
from tests.support.flows import PARENTS, PARTS, REASON, blocked_flow_source
from tests.support.pilot import settle
from tests.support.top import rows
from tui.app import MaTop
from tui.screens import HelpScreen, JobScreen, QueueScreen
from tui.screens.job_detail import RELOAD_S

SIZE = (140, 40)
LATER = (FlowJob(PARTS, "c-3", "part.later", "delayed"),)


def top(source: FakeSource) -> MaTop:
    return MaTop(source=source, refresh_s=3600, thresholds=Thresholds())


async def keys(pilot: Pilot[None], *pressed: str) -> None:
    await pilot.press(*pressed)
    await settle(pilot)


def text(app: MaTop, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


def children(app: MaTop) -> list[list[str]]:
    table: DataTable[Any] = app.screen.query_one("#children", DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def open_job(app: MaTop, pilot: Pilot[None], queue: str, job_id: str) -> None:
    await app.push_screen(JobScreen(queue, job_id))
    await settle(pilot)


async def test_a_queue_of_flow_parents_opens_on_waiting_children_and_its_parent_says_what_blocks_it():
    app = top(blocked_flow_source())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert [r[0] for r in rows(app)] == [PARTS, PARENTS]
        await keys(
            pilot, "down", "enter"
        )  # reports: nothing failed nor waiting, one parent waiting for children
        assert isinstance(app.screen, QueueScreen) and app.screen.state == "waiting-children"
        assert [r[:2] for r in rows(app)] == [["p-1", "report.build"]]
        await keys(pilot, "enter")
        assert isinstance(app.screen, JobScreen) and (app.screen.queue, app.screen.job_id) == (PARENTS, "p-1")
        flow = text(app, "#flow")
        assert f"blocked by 1 failed child: {PARTS}#c-2 {REASON}" in flow
        assert "waiting for 1 more child: 1 delayed" in flow and "3 children: 2 pending, 1 processed" in flow
        assert [r[:5] for r in children(app)] == [
            ["pending", PARTS, "c-2", "part.bad", "failed"],
            ["pending", PARTS, "c-3", "part.later", "delayed"],
            ["processed", PARTS, "c-1", "part.ok", "completed"],
        ]
        assert children(app)[0][5] == REASON


async def test_c_focuses_the_children_enter_opens_the_selected_one_and_u_opens_its_parent():
    app = top(blocked_flow_source())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await open_job(app, pilot, PARENTS, "p-1")
        table = app.screen.query_one("#children", DataTable)
        app.set_focus(None)
        await keys(pilot, "c")
        assert app.focused is table
        await keys(pilot, "down", "enter")  # the second child: the delayed one
        assert isinstance(app.screen, JobScreen) and (app.screen.queue, app.screen.job_id) == (PARTS, "c-3")
        assert f"child of {PARENTS}#p-1 report.build (waiting-children)" in text(app, "#flow")
        await keys(pilot, "u")
        assert isinstance(app.screen, JobScreen) and (app.screen.queue, app.screen.job_id) == (PARENTS, "p-1")
        await keys(pilot, "escape")
        assert (app.screen.queue, app.screen.job_id) == (PARTS, "c-3")
        await keys(pilot, "escape")
        assert (app.screen.queue, app.screen.job_id) == (PARENTS, "p-1")


async def test_the_failed_child_says_it_holds_its_parent_and_u_opens_that_parent():
    app = top(blocked_flow_source())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "enter")  # report-parts: it has a failed job, so its failed jobs
        assert app.screen.state == "failed" and rows(app)[0][0] == "c-2"
        await keys(pilot, "enter")
        assert f"this failed job holds its parent {PARENTS}#p-1 in waiting-children" in text(app, "#flow")
        assert not app.screen.query_one("#children", DataTable).display  # a child without children of its own
        await keys(pilot, "u")
        assert isinstance(app.screen, JobScreen) and (app.screen.queue, app.screen.job_id) == (PARENTS, "p-1")


async def test_u_and_c_on_a_job_outside_any_flow_say_so_and_stay():
    source = FakeSource(queues=[queue_stats("solo", failed=1)], jobs={("solo", "failed"): job_rows("f", 1)})
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await open_job(app, pilot, "solo", "f-0")
        assert not app.screen.query_one("#flow", Static).display
        assert not app.screen.query_one("#children", DataTable).display
        await keys(pilot, "u")
        assert app.message == "solo#f-0 has no parent" and app.screen.job_id == "f-0"
        await keys(pilot, "c")
        assert app.message == "solo#f-0 has no children" and app.screen.job_id == "f-0"
        await keys(pilot, "enter")
        assert isinstance(app.screen, JobScreen) and app.screen.job_id == "f-0"


async def test_a_group_cut_short_says_how_many_were_not_read_and_its_row_opens_nothing():
    app = top(blocked_flow_source(pending_total=500))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await open_job(app, pilot, PARENTS, "p-1")
        flow = text(app, "#flow")
        assert "blocked by 1 failed child (in the first 2 of 500 pending read)" in flow
        assert "waiting for 500 children; the first 2 of 500 pending read: 1 delayed" in flow
        assert children(app)[2][:4] == ["pending", "", "", "… 498 more not listed"]
        await keys(pilot, "down", "down", "enter")
        assert isinstance(app.screen, JobScreen) and app.screen.job_id == "p-1"


async def test_a_flow_that_cannot_be_read_leaves_the_detail_and_says_why():
    class Broken(FakeSource):
        async def flow(self, queue: str, job_id: str) -> Flow | None:
            raise ConnectionError("Redis went away")

    app = top(Broken(jobs={("solo", "failed"): job_rows("f", 1, reason="boom")}))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await open_job(app, pilot, "solo", "f-0")
        assert text(app, "#flow") == "flow not read: ConnectionError: Redis went away"
        assert "boom" in text(app, "#job")


async def test_a_failing_parent_says_it_will_fail_and_which_child_failed_it():
    bad = FlowJob(PARTS, "c-2", "part.bad", "failed", REASON)
    flow = Flow(
        PARENTS,
        "p-1",
        "waiting",
        deferred_failure=f"child bull:{PARTS}:c-2 failed",
        groups={"failed": ChildGroup(1, (bad,))},
    )
    source = FakeSource(jobs={(PARENTS, "waiting"): job_rows("p", 2)}, flows={(PARENTS, "p-1"): flow})
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await open_job(app, pilot, PARENTS, "p-1")
        shown = text(app, "#flow")
        assert f"will fail when a worker takes it: child bull:{PARTS}:c-2 failed" in shown
        assert f"failed, failing the parent: {PARTS}#c-2 {REASON}" in shown and "blocked" not in shown
        assert children(app)[0][:5] == ["failed, failing the parent", PARTS, "c-2", "part.bad", "failed"]


async def test_the_detail_reads_the_flow_again_on_return_and_on_a_tick_so_blocked_clears_once_the_child_is_requeued():
    source = blocked_flow_source()
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await open_job(app, pilot, PARENTS, "p-1")
        assert "blocked by 1 failed child" in text(app, "#flow")
        await keys(pilot, "c", "enter")  # the failed child; meanwhile it is requeued and waits again
        assert app.screen.job_id == "c-2"
        unblocked = dataclasses.replace(
            source.flows[(PARENTS, "p-1")],
            groups={
                "pending": ChildGroup(2, (FlowJob(PARTS, "c-2", "part.bad", "waiting"), *LATER)),
                "processed": source.flows[(PARENTS, "p-1")].group("processed"),
            },
        )
        source.flows[(PARENTS, "p-1")] = unblocked
        await keys(pilot, "escape")  # back on the parent: read again
        assert app.screen.job_id == "p-1"
        assert "blocked" not in text(app, "#flow") and "waiting for 2 children: 1 delayed, 1 waiting" in text(
            app, "#flow"
        )
        # and while it stays open, a tick after RELOAD_S reads it again: the parent has moved on
        source.flows[(PARENTS, "p-1")] = dataclasses.replace(unblocked, state="waiting", groups={})
        screen = app.screen
        assert isinstance(screen, JobScreen)
        screen.loaded_at -= RELOAD_S
        app.render_screen()
        await settle(pilot)
        assert not screen.query_one("#flow", Static).display


async def test_a_detail_that_cannot_be_read_again_keeps_what_it_showed_and_says_since_when():
    source = blocked_flow_source()
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await open_job(app, pilot, PARENTS, "p-1")
        screen = app.screen
        assert isinstance(screen, JobScreen)
        read_at = screen.read_at

        async def gone(queue: str, job_id: str) -> None:
            raise ConnectionError("Redis went away")

        source.job_detail = gone  # type: ignore[method-assign]
        screen.reload()
        await settle(pilot)
        flow = text(app, "#flow").splitlines()
        assert flow[0] == f"not read again: ConnectionError: Redis went away; shown as read at {read_at}"
        assert f"blocked by 1 failed child: {PARTS}#c-2 {REASON}" in flow
        assert "report.build#p-1" in text(app, "#job") and len(children(app)) == 3


async def test_help_lists_the_flow_keys():
    app = top(blocked_flow_source())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "question_mark")
        assert isinstance(app.screen, HelpScreen)
        help_text = str(app.screen.query_one("#help", Static).render())
        assert "u its parent" in help_text and "c its children (enter opens one)" in help_text
