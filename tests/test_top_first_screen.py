"""ma-top's first screen, driven by keys against the in-memory DataSource: the findings pane is one key away
from every finding's evidence (`f` or `tab` focuses it, arrows select, enter goes where `Finding.goto` says), the
strip of recent events, and the header's count of processes not RUNNING."""

from __future__ import annotations

import dataclasses
from typing import Any

from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from pool.monitor.findings import Finding, Thresholds
from pool.monitor.queries import FailureGroup
from pool.monitor.snapshot import QueueStats, RedisHealth, Snapshot
from tests.support.fake_source import FakeSource, job_rows, process, queue_stats
from tests.support.pilot import settle
from tui.app import MaTop
from tui.format import procs_summary
from tui.screens import (
    BulkScreen,
    EventsScreen,
    FailuresScreen,
    JobScreen,
    ProcessesScreen,
    QueueScreen,
    QueuesScreen,
    RedisScreen,
)
from tui.widgets.findings_pane import FindingsPane
from tui.widgets.recent_events import recent_events

Q = "identity-events"
SIZE = (140, 44)
SOCK = "unix:///srv/host-a/var/supervisor.sock"
TS = 1_795_000_000_000  # epoch ms of the first test event


def top(source: FakeSource) -> MaTop:
    # one tick on its own at start; the rest only when a test calls app.refresh_now()
    return MaTop(source=source, refresh_s=3600, thresholds=Thresholds())


async def keys(pilot: Pilot[None], *pressed: str) -> None:
    await pilot.press(*pressed)
    await settle(pilot)


def text(app: MaTop, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


def cursor_row(app: MaTop) -> list[str]:
    table: DataTable[Any] = app.screen.query_one(DataTable)
    return [str(c) for c in table.get_row_at(table.cursor_row)]


def pane(app: MaTop) -> FindingsPane:
    return app.screen.query_one(FindingsPane)


def unhandled(name: str, **counts: int) -> QueueStats:
    return dataclasses.replace(queue_stats(name, **counts), handled=False)


def counting(q: QueueStats, **counters: int) -> QueueStats:
    return dataclasses.replace(q, counters=counters)


def event(i: int, kind: str, queue: str, message: str) -> tuple[str, dict[str, str]]:
    return (f"{i + 1}-0", {"ts": str(TS + i * 1000), "kind": kind, "queue": queue, "message": message})


# -- the findings pane ----------------------------------------------------------------------------------


async def test_f_focuses_the_findings_most_severe_first_and_arrows_move_the_selection():
    source = FakeSource(queues=[unhandled("billing-usgae", waiting=2), queue_stats(Q, waiting=3, workers=0)])
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert [(f.kind, f.subject) for f in pane(app).found] == [
            ("no-workers", Q),  # critical before warning
            ("no-handler", "billing-usgae"),
        ]
        assert "▶" not in text(app, "#findings")  # no selection shown until the pane has the keys
        await keys(pilot, "f")
        assert pane(app).has_focus and pane(app).selected.kind == "no-workers"
        assert "▶CRITICAL identity-events: no worker" in text(app, "#findings")
        await keys(pilot, "down", "down")  # stops at the last one
        assert pane(app).selected.kind == "no-handler"
        await keys(pilot, "up")
        assert pane(app).selected.kind == "no-workers"
        await keys(pilot, "escape")  # back to the queue table
        assert isinstance(app.screen.focused, DataTable)
        await keys(pilot, "tab")  # tab cycles to the pane as well
        assert pane(app).has_focus


async def test_the_selection_stays_on_its_finding_when_a_tick_adds_a_more_severe_one():
    source = FakeSource(queues=[unhandled("billing-usgae", waiting=2), queue_stats(Q, waiting=3)])
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "f")
        assert pane(app).selected.kind == "no-handler"
        source.queues = [unhandled("billing-usgae", waiting=2), queue_stats(Q, waiting=3, workers=0)]
        await app.refresh_now()
        await settle(pilot)
        assert [f.kind for f in pane(app).found] == ["no-workers", "no-handler"]
        assert pane(app).selected.kind == "no-handler" and pane(app).cursor == 1


async def test_many_findings_scroll_with_the_selection():
    source = FakeSource(queues=[unhandled(f"product-{i}.jobs", waiting=1) for i in range(7)])
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "… 3 more below" in text(app, "#findings")
        await keys(pilot, "f", "end")
        shown = text(app, "#findings")
        assert "… 3 more above" in shown and "more below" not in shown
        assert "▶WARNING  product-6.jobs" in shown and "product-2.jobs" not in shown


async def test_space_on_the_findings_pane_pauses_nothing():
    source = FakeSource(queues=[queue_stats(Q, waiting=3, workers=0)])
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "f", "space")
    assert source.calls == []


# -- enter on a finding: its evidence, one key away -----------------------------------------------------


async def test_enter_on_a_no_handler_finding_opens_that_queues_waiting_jobs():
    source = FakeSource(
        queues=[queue_stats(Q), unhandled("billing-usgae", waiting=2)],
        jobs={("billing-usgae", "waiting"): job_rows("w", 2)},
    )
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert pane(app).selected.goto == "queue:billing-usgae"
        await keys(pilot, "f", "enter")
        assert isinstance(app.screen, QueueScreen)
        assert (app.screen.queue, app.screen.state) == ("billing-usgae", "waiting")
        assert app.screen.query_one(DataTable).row_count == 2
        await keys(pilot, "escape")
        assert isinstance(app.screen, QueuesScreen)


async def test_enter_on_a_no_workers_finding_puts_the_processes_cursor_on_that_programs_first_process():
    source = FakeSource(
        queues=[queue_stats(Q, waiting=3, workers=0)],
        procs=[
            process(SOCK, "billing-usage", 0, 101),
            process(SOCK, "billing-usage", 1, 102),
            process(SOCK, Q, 0, 0, "STOPPED"),
            process(SOCK, Q, 1, 0, "STOPPED"),
        ],
    )
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await app.refresh_now()  # the findings again, now that supervisord's processes are read
        await settle(pilot)
        finding = pane(app).selected
        assert finding.goto == f"process:{Q}" and "2 process(es) STOPPED" in finding.cause
        await keys(pilot, "f", "enter")
        assert isinstance(app.screen, ProcessesScreen)
        assert cursor_row(app)[:2] == [f"{Q}:{Q}_00", "STOPPED"]
        await keys(pilot, "a")  # the action the finding names: start the process under the cursor
    assert source.calls == [("control_process", SOCK, f"{Q}:{Q}_00", "start")]


async def test_enter_on_a_stalled_finding_shows_the_events_filtered_by_kind_and_queue():
    stalls = counting(queue_stats(Q), stalled=0)
    source = FakeSource(
        queues=[stalls],
        events=[
            event(0, "stalled", "billing-usage", "job 3 stalled and was moved back to wait"),
            event(1, "throttled", Q, "identity answered 429"),
            event(2, "stalled", Q, "job 7 stalled and was moved back to wait"),
        ],
    )
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        source.recent = {(Q, "stalled"): 2}
        await app.refresh_now()  # two stalls within the last minutes
        await settle(pilot)
        assert pane(app).selected.goto == f"events:stalled {Q}"
        await keys(pilot, "f", "enter")
        assert isinstance(app.screen, EventsScreen)
        box = app.screen.query_one("#filter", Input)
        assert box.display and box.value == f"stalled {Q}"  # the filter shows, `/` edits it
        table: DataTable[Any] = app.screen.query_one(DataTable)
        shown = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert [(r[1], r[2]) for r in shown] == [("stalled", Q)]  # every word matches some field
        await keys(pilot, "1", "2")  # the filter stays on the view until cleared
        assert app.screen.query_one(DataTable).row_count == 1


async def test_enter_on_a_retries_finding_shows_the_retried_attempts_of_that_queue():
    source = FakeSource(
        queues=[queue_stats("billing-invoice"), queue_stats("billing-payment-sync")],
        events=[
            event(0, "retry", "billing-invoice", "stripe answered 500"),
            event(1, "retry", "billing-payment-sync", "stripe answered 503"),
            event(2, "failed", "billing-payment-sync", "stripe answered 503"),
        ],
    )
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        source.recent = {("billing-payment-sync", "retries"): 40}
        await app.refresh_now()
        await settle(pilot)
        assert pane(app).selected.goto == "events:retry billing-payment-sync"
        await keys(pilot, "f", "enter")
        assert isinstance(app.screen, EventsScreen)
        table: DataTable[Any] = app.screen.query_one(DataTable)
        shown = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert [(r[1], r[2]) for r in shown] == [("retry", "billing-payment-sync")]


async def test_enter_on_a_failure_group_finding_puts_the_failures_cursor_on_that_queues_first_group():
    groups = [
        FailureGroup("billing-invoice", "stripe answered 500", "e", "", 5, 1, 2, ("x",), ("i-1",)),
        FailureGroup("billing-payment-sync", "stripe answered 503", "e", "", 2, 1, 2, ("y",), ("p-1", "p-2")),
    ]
    queues = [queue_stats("billing-invoice", failed=5), queue_stats("billing-payment-sync", failed=2)]
    app = top(FakeSource(queues=queues, groups=groups))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.state.findings = [injected("failures:billing-payment-sync")]
        app.render_screen()
        await keys(pilot, "f", "enter")
        assert isinstance(app.screen, FailuresScreen)
        assert cursor_row(app)[:2] == ["billing-payment-sync", "2"]


class BadPolicySource(FakeSource):
    async def fetch(self) -> Snapshot:
        return dataclasses.replace(await super().fetch(), redis=RedisHealth(True, policy="allkeys-lru"))


async def test_enter_on_a_redis_finding_shows_the_redis_view():
    app = top(BadPolicySource(queues=[queue_stats(Q)]))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert (pane(app).selected.kind, pane(app).selected.goto) == ("eviction-policy", "redis")
        await keys(pilot, "f", "enter")
        assert isinstance(app.screen, RedisScreen)
        assert "allkeys-lru — BullMQ needs noeviction" in text(app, "#redis")


def injected(goto: str) -> Finding:
    """A finding of a kind whose rule lives elsewhere (bulk jobs, one job): the pane only reads its goto."""
    return Finding("warning", "test", Q, "a cause", "the figures", "the key", goto)


async def test_enter_on_a_finding_about_bulk_jobs_shows_the_bulk_view():
    app = top(FakeSource(queues=[queue_stats(Q)]))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.state.findings = [injected("bulk")]
        app.render_screen()
        await keys(pilot, "f", "enter")
        assert isinstance(app.screen, BulkScreen)


async def test_enter_on_a_finding_about_one_job_shows_its_detail():
    source = FakeSource(queues=[queue_stats(Q, active=1)], jobs={(Q, "active"): job_rows("a", 3)})
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.state.findings = [injected(f"job:{Q}:a-1")]
        app.render_screen()
        await keys(pilot, "f", "enter")
        assert isinstance(app.screen, JobScreen) and (app.screen.queue, app.screen.job_id) == (Q, "a-1")
        assert "test.job#a-1" in text(app, "#job")


async def test_enter_on_a_finding_without_goto_puts_the_queue_cursor_on_its_subject_even_when_filtered_out():
    source = FakeSource(queues=[queue_stats("billing-usage"), queue_stats(Q, waiting=4, paused=True)])
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "slash", "b", "i", "l", "l", "enter")  # Q is filtered out of the table
        assert cursor_row(app)[0] == "billing-usage"
        assert (pane(app).selected.kind, pane(app).selected.goto) == ("paused", "")
        await keys(pilot, "f", "enter")
        assert isinstance(app.screen, QueuesScreen) and isinstance(app.screen.focused, DataTable)
        assert cursor_row(app)[0] == Q and not app.screen.query_one("#filter").display
        await keys(pilot, "space")  # what the finding's action says: space on the queue resumes it
    assert source.calls == [("set_paused", Q, False)]


# -- the recent events strip ----------------------------------------------------------------------------


async def test_the_strip_shows_the_newest_coalesced_events_first():
    source = FakeSource(
        queues=[queue_stats(Q)],
        events=[
            event(0, "redis-lost", "", "Redis connection lost"),
            event(1, "stalled", Q, "job 7 stalled and was moved back to wait"),
            event(2, "throttled", "billing-usage", "Billing usage aggregation throttled"),
            event(3, "throttled", "billing-usage", "Billing usage aggregation throttled"),
            event(4, "redis-recovered", "", "Redis connection recovered after 9.8s"),
            event(5, "throttled", "billing-usage", "Billing usage aggregation throttled"),
            event(6, "failed", Q, "job 9 failed: identity answered 500"),
        ],
    )
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        lines = text(app, "#recent").splitlines()
        assert [line.split()[1] for line in lines] == ["failed", "throttled", "redis-recovered", "stalled"]
        # three events on one line, over their real span, and the throttles they stand for
        assert lines[1].endswith("Billing usage aggregation throttled ×3 in 3s (3 throttles)"), lines[1]
        assert "redis-lost" not in text(app, "#recent")  # the oldest falls off


def test_the_strip_says_when_there_are_no_events():
    assert "no events" in recent_events([])


# -- the header's process count -------------------------------------------------------------------------


def test_the_process_count_is_red_for_a_broken_process_yellow_for_a_stopped_one_and_plain_when_all_run():
    assert procs_summary(["RUNNING", "FATAL", "STOPPED", "RUNNING"]) == (
        "[red]procs 2/4 running, 1 FATAL, 1 STOPPED[/red]"
    )
    assert procs_summary(["RUNNING", "STOPPED"]) == "[yellow]procs 1/2 running, 1 STOPPED[/yellow]"
    assert procs_summary(["RUNNING", "BACKOFF", "BACKOFF"]) == "[red]procs 1/3 running, 2 BACKOFF[/red]"
    assert procs_summary(["RUNNING", "RUNNING"]) == "procs 2/2 running"
    assert procs_summary([]) == ""  # no supervisord read: no count rather than a false 0/0


async def test_the_header_counts_processes_not_running_and_the_count_clears_when_they_run_again():
    source = FakeSource(
        queues=[queue_stats(Q)],
        procs=[
            process(SOCK, Q, 0, 101),
            process(SOCK, Q, 1, 0, "FATAL"),
            process(SOCK, "billing-usage", 0, 0, "STOPPED"),
        ],
    )
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await app.refresh_now()
        await settle(pilot)
        assert "procs 1/3 running, 1 FATAL, 1 STOPPED" in text(app, "#status")
        await keys(pilot, "2")  # every view's header
        assert "procs 1/3 running, 1 FATAL, 1 STOPPED" in text(app, "#status")
        source.procs = [
            process(SOCK, Q, 0, 101),
            process(SOCK, Q, 1, 105),
            process(SOCK, "billing-usage", 0, 106),
        ]
        await app.refresh_processes()
        await app.refresh_now()
        await settle(pilot)
        assert "procs 3/3 running" in text(app, "#status") and "FATAL" not in text(app, "#status")


async def test_the_header_shows_no_process_count_without_supervisord():
    app = top(FakeSource(queues=[queue_stats(Q)]))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "procs" not in text(app, "#status")


async def test_f_typed_in_the_filter_box_filters_rather_than_moving_to_the_findings():
    source = FakeSource(queues=[queue_stats("billing-usage"), queue_stats("platform-ops"), queue_stats(Q)])
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "slash", "f", "o", "r", "m", "enter")
        table: DataTable[Any] = app.screen.query_one(DataTable)
        assert [str(table.get_row_at(i)[0]) for i in range(table.row_count)] == ["platform-ops"]
        assert not pane(app).has_focus
