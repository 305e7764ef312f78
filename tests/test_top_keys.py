"""ma-top's keys against an in-memory DataSource (tests/support/fake_source.py): no Valkey, no supervisord.

Each test drives the app with Pilot the way an on-call engineer would and checks which calls reached the
source. Waits are on the app's own workers (the endless bulk-channel listener excepted), never sleeps.
"""

from __future__ import annotations

import dataclasses

from textual.widgets import Static

from pool.monitor.queries import FailureGroup
from tests.support.fake_source import FakeSource, job_rows, queue_stats
from tests.support.pilot import settle
from tests.support.top import rows
from tests.support.top_pilot import keys, top, with_processes
from tui.screens import (
    BulkScreen,
    ConfirmScreen,
    EventsScreen,
    FailuresScreen,
    JobScreen,
    ProcessesScreen,
    QueueScreen,
    QueuesScreen,
    RedisScreen,
)

Q = "identity-events"
SIZE = (140, 40)


def with_failed_jobs(n: int, **more: int) -> FakeSource:
    return FakeSource(
        queues=[queue_stats(Q, failed=n, **more), queue_stats("billing-usage", waiting=2)],
        jobs={(Q, "failed"): job_rows("f", n, name="test.refuse", reason="organization does not exist")},
    )


async def test_number_keys_switch_between_the_six_views():
    app = top(with_failed_jobs(1))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        views = {"2": EventsScreen, "3": ProcessesScreen, "4": RedisScreen, "5": FailuresScreen}
        views |= {"6": BulkScreen, "1": QueuesScreen}
        for key, screen in views.items():
            await keys(pilot, key)
            assert isinstance(app.screen, screen), key
            if key == "4":
                assert "maxmemory-policy noeviction" in str(app.screen.query_one("#redis", Static).render())


async def test_enter_on_a_queue_lists_its_failed_jobs_and_enter_on_a_job_shows_its_detail():
    app = top(with_failed_jobs(3))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert [r[0] for r in rows(app)] == ["billing-usage", Q]  # sorted as the source gave them
        await keys(pilot, "down", "enter")
        assert isinstance(app.screen, QueueScreen) and app.screen.state == "failed"
        assert [r[0] for r in rows(app)] == ["f-2", "f-1", "f-0"]  # newest first
        await keys(pilot, "down", "enter")
        assert isinstance(app.screen, JobScreen) and app.screen.job_id == "f-1"
        detail = str(app.screen.query_one("#job", Static).render())
        assert "test.refuse#f-1" in detail and "organization does not exist" in detail
        await keys(pilot, "escape")
        assert isinstance(app.screen, QueueScreen)


async def test_a_queue_without_failures_opens_on_its_waiting_jobs():
    source = FakeSource(queues=[queue_stats(Q, waiting=2)], jobs={(Q, "waiting"): job_rows("w", 2)})
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "enter")
        assert app.screen.state == "waiting" and len(rows(app)) == 2


async def test_left_and_right_cycle_through_the_states_and_show_each_ones_jobs():
    source = with_failed_jobs(1, delayed=2)
    source.jobs[(Q, "delayed")] = job_rows("d", 2)
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "down", "enter")
        seen = []
        for _ in range(7):
            await keys(pilot, "right")
            seen.append(app.screen.state)
        assert seen == [
            "completed",
            "waiting-children",
            "waiting",
            "active",
            "delayed",
            "prioritized",
            "failed",
        ]
        await keys(pilot, "left", "left")
        assert app.screen.state == "delayed" and [r[0] for r in rows(app)] == ["d-1", "d-0"]


async def test_n_and_p_page_through_a_long_state_and_stop_at_its_ends():
    app = top(with_failed_jobs(120))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "down", "enter")
        title = app.screen.query_one("#title", Static)
        assert "page 1/3 (120 jobs)" in str(title.render()) and rows(app)[0][0] == "f-119"
        await pilot.press("n", "n", "n")  # past the last page: stays on it
        await settle(pilot)
        assert app.screen.page == 2 and len(rows(app)) == 20 and rows(app)[-1][0] == "f-0"
        await keys(pilot, "p")
        assert "page 2/3" in str(title.render()) and rows(app)[0][0] == "f-69"
        await keys(pilot, "p", "p")
        assert app.screen.page == 0


async def test_requeue_shown_acts_on_exactly_the_ids_on_screen_after_a_confirm():
    source = with_failed_jobs(60)
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "down", "enter")
        shown = [r[0] for r in rows(app)]
        assert len(shown) == 50  # one page of 60
        await pilot.press("R")
        assert isinstance(app.screen, ConfirmScreen)
        assert "requeue 50 failed job(s) shown on identity-events" in app.screen.question
        await pilot.press("n")  # cancelled: nothing happens
        await settle(pilot)
        assert source.calls == []
        await keys(pilot, "R", "y")
    assert source.calls == [("requeue", Q, shown)]
    assert source.journal_entries == [
        {"action": "requeue", "target": Q, "ids": shown, "outcome": "50 done, 0 skipped"}
    ]
    assert [r.id for r in source.jobs[(Q, "failed")]] == [f"f-{i}" for i in reversed(range(10))]


async def test_r_requeues_the_job_under_the_cursor_only():
    source = with_failed_jobs(3)
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "down", "enter")
        await keys(pilot, "down", "r")
        assert [r[0] for r in rows(app)] == ["f-2", "f-0"]
        assert app.message == "requeued f-1"
    assert source.calls == [("requeue", Q, ["f-1"])]
    assert source.journal_entries[0]["outcome"] == "1 requeued"


async def test_requeue_keys_do_nothing_outside_the_failed_state():
    source = FakeSource(queues=[queue_stats(Q, waiting=2)], jobs={(Q, "waiting"): job_rows("w", 2)})
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "enter")
        await keys(pilot, "r", "R", "P")
        assert isinstance(app.screen, QueueScreen)
    assert source.calls == []


async def test_capital_p_promotes_the_delayed_jobs_shown_after_a_confirm():
    source = FakeSource(queues=[queue_stats(Q, delayed=2)], jobs={(Q, "delayed"): job_rows("d", 2)})
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter")  # no failures: opens on waiting
        await settle(pilot)
        await pilot.press("right", "right")  # waiting -> active -> delayed
        await settle(pilot)
        assert app.screen.state == "delayed"
        await pilot.press("P")
        assert isinstance(app.screen, ConfirmScreen) and "promote 2 delayed job(s)" in app.screen.question
        await keys(pilot, "y")
        assert rows(app) == []
    assert source.calls == [("promote", Q, ["d-1", "d-0"])]


async def test_space_pauses_and_resumes_the_queue_under_the_cursor():
    source = with_failed_jobs(1)
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "down", "space")
        assert "PAUSED" in rows(app)[1][-1]
        await keys(pilot, "space")
        assert "PAUSED" not in rows(app)[1][-1]
    assert source.calls == [("set_paused", Q, True), ("set_paused", Q, False)]
    assert [e["action"] for e in source.journal_entries] == ["pause", "resume"]


async def test_capital_r_in_failures_requeues_exactly_the_group_shown():
    group = FailureGroup(
        Q,
        "organization <id> does not exist",
        "organization org_1 does not exist",
        "",
        2,
        1,
        2,
        ("test.refuse",),
        ("f-1", "f-0"),
    )
    source = with_failed_jobs(2)
    source.groups = [group]
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "5")
        assert rows(app)[0][:2] == [Q, "2"]
        await pilot.press("R")
        assert isinstance(app.screen, ConfirmScreen) and "requeue 2 failed job(s)" in app.screen.question
        await keys(pilot, "y")
    assert source.calls == [("requeue", Q, ["f-1", "f-0"])]
    assert source.journal_entries[0]["action"] == "requeue group"


async def test_read_only_refuses_every_action_and_says_so():
    source = with_failed_jobs(2, delayed=1)
    source.jobs[(Q, "delayed")] = job_rows("d", 1)
    source.procs = with_processes().procs
    source.groups = [FailureGroup(Q, "sig", "example", "", 2, 1, 2, ("test.refuse",), ("f-1", "f-0"))]
    app = top(source, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "down", "space")
        assert app.message == "read-only: pause/resume refused"
        await keys(pilot, "enter")
        for key in ("r", "R", "left", "left", "P"):
            await keys(pilot, key)
            assert not isinstance(app.screen, ConfirmScreen)
        await keys(pilot, "escape", "3")
        for key in ("s", "x", "a", "S"):
            await keys(pilot, key)
            assert not isinstance(app.screen, ConfirmScreen)
        assert app.message == "read-only: rolling restart refused"
        await keys(pilot, "5")
        await keys(pilot, "R")
        assert not isinstance(app.screen, ConfirmScreen) and app.message == "read-only: requeue group refused"
        assert "READ-ONLY" in str(app.screen.query_one("#status", Static).render())
    assert source.calls == [] and source.journal_entries == []


async def test_slash_filters_the_queues_shown_and_an_empty_filter_clears_it():
    source = FakeSource(queues=[queue_stats(n, waiting=1) for n in ("billing-invoice", "billing-usage", Q)])
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "slash", "u", "s", "a", "enter")
        assert [r[0] for r in rows(app)] == ["billing-usage"]
        assert app.screen.query_one("#filter").display  # a kept filter stays visible
        await keys(pilot, "slash", "backspace", "backspace", "backspace", "enter")
        assert len(rows(app)) == 3 and not app.screen.query_one("#filter").display


async def test_slash_filters_the_events_by_kind_queue_or_message():
    source = FakeSource(
        queues=[queue_stats(Q)],
        events=[
            (
                "1-0",
                {
                    "ts": "1795000000000",
                    "kind": "throttled",
                    "queue": "billing-usage",
                    "message": "throttled",
                },
            ),
            ("2-0", {"ts": "1795000001000", "kind": "stalled", "queue": Q, "message": "job 7 stalled"}),
        ],
    )
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "2")
        assert [r[1] for r in rows(app)] == ["stalled", "throttled"]  # newest first
        await keys(pilot, "slash", "s", "t", "a", "l", "enter")
        assert [r[1] for r in rows(app)] == ["stalled"]


async def test_bulk_view_shows_a_job_heard_on_the_channel():
    from pool.monitor.snapshot import BulkJob

    source = FakeSource(queues=[queue_stats(Q)])
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await source.bulk.put(
            BulkJob("bulk-1", "9", "bulk.activate", "running", 10, 4, 4, 0, 2.5, 0, 0, "h", 1)
        )
        while "bulk-1" not in app.state.live_bulk:
            await pilot.pause()
        await keys(pilot, "6")
        assert rows(app)[0][:4] == ["bulk-1", "bulk.activate", "running", "4/10"]


async def test_help_lists_the_keys_and_the_thresholds():
    app = top(with_failed_jobs(1))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        text = str(app.screen.query_one("#help", Static).render())
        assert "r requeue job" in text and "backlog > 300" in text and "journaled to ma:audit" in text
        await pilot.press("escape")
        assert isinstance(app.screen, QueuesScreen)


async def test_badges_and_the_findings_pane_come_from_the_findings_and_rates_from_the_recent_counts():
    payments = dataclasses.replace(queue_stats("billing-payment-sync"), counters={"retries": 90_000})
    source = FakeSource(queues=[queue_stats(Q, waiting=3, workers=0), payments])
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        badges = {r[0]: r[-1] for r in rows(app)}
        assert badges == {Q: "NO WORKERS", "billing-payment-sync": ""}, "a lifetime counter is no RETRIES"
        pane = str(app.screen.query_one("#findings", Static).render())
        assert f"{Q}: no worker: " in pane and "ma-top 3" in pane
        source.queues = [queue_stats(Q, waiting=3), payments]
        source.recent = {("billing-payment-sync", "retries"): 600}
        await app.refresh_now()  # 600 retries within the last minutes are > 5/min
        badges = {r[0]: r[-1] for r in rows(app)}
        assert badges == {Q: "", "billing-payment-sync": "RETRIES"}
        pane = str(app.screen.query_one("#findings", Static).render())
        assert "billing-payment-sync" in pane and "no worker" not in pane
