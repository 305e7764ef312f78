"""The schedulers view (key 7): every job scheduler with its next run (in, or MISSED by) and its last run's job;
enter opens the last run's job, `n` the next run's, `/` filters, and enter on the MISSED finding lands here. The keys
under Pilot over the in-memory source, and the look as an SVG snapshot (time frozen). Update the picture
deliberately with `pytest tests/test_top_schedulers_view.py --snapshot-update` and review the SVG."""

from __future__ import annotations

from datetime import datetime

from pool.monitor.findings import Thresholds
from pool.monitor.queries import JobRow
from pool.monitor.schedulers import Run, Scheduler
from tests.support.fake_source import T0, FakeSource, queue_stats
from tests.support.pilot import settle
from tests.support.top import rows
from tui.app import MaTop
from tui.screens import JobScreen, QueuesScreen
from tui.screens.schedulers import SchedulersScreen

SIZE = (180, 30)
NOW_MS = int(T0 * 1000)
MIN = 60_000


def _run(sid: str, ms: int, outcome: str, at_ms: int) -> Run:
    return Run(f"repeat:{sid}:{ms}", outcome, at_ms)


def schedulers() -> list[Scheduler]:
    """The queue table's three (one missed: its queue has no worker), and a Node service's cron scheduler."""
    due_soon = NOW_MS - 11 * MIN  # five-minute runs, the next one 11 minutes late
    reconcile = NOW_MS + 4 * MIN
    cleanup = NOW_MS + 20 * 3600_000
    report = NOW_MS + 3 * 3600_000
    return [
        Scheduler(
            "billing-payment-sync",
            "payment-reconcile",
            "payment.reconcile",
            "",
            15 * MIN,
            "",
            reconcile,
            NOW_MS,
            15 * MIN,
            40,
            _run("payment-reconcile", reconcile, "delayed", reconcile),
            _run("payment-reconcile", reconcile - 15 * MIN, "failed", reconcile - 15 * MIN + 2_300),
        ),
        Scheduler(
            "product-x.reports",
            "daily-report",
            "report.daily",
            "0 9 * * *",
            0,
            "Europe/Paris",
            report,
            NOW_MS,
            86_400_000,
            1,
            _run("daily-report", report, "delayed", report),
            None,
        ),
        Scheduler(
            "task-notifications",
            "task-due-soon",
            "task.due-soon",
            "",
            5 * MIN,
            "",
            due_soon,
            NOW_MS,
            5 * MIN,
            288,
            _run("task-due-soon", due_soon, "delayed", due_soon),
            _run("task-due-soon", due_soon - 5 * MIN, "completed", due_soon - 5 * MIN + 850),
        ),
        Scheduler(
            "user-management-jobs",
            "impersonation-cleanup",
            "impersonation.cleanup",
            "",
            86_400_000,
            "",
            cleanup,
            NOW_MS,
            86_400_000,
            12,
            _run("impersonation-cleanup", cleanup, "delayed", cleanup),
            Run("", "gone", 0),
        ),
    ]


class FrozenTop(MaTop):
    def now(self) -> datetime:
        return datetime.fromtimestamp(T0)


def top() -> FrozenTop:
    last = schedulers()[0].last_run
    assert last is not None
    source = FakeSource(
        queues=[
            queue_stats("billing-payment-sync", workers=1),
            queue_stats("product-x.reports", workers=0, delayed=1),
            queue_stats("task-notifications", workers=0, delayed=1),
            queue_stats("user-management-jobs", workers=1, delayed=1),
        ],
        schedulers=schedulers(),
        jobs={
            ("billing-payment-sync", "failed"): [
                JobRow(last.job_id, "payment.reconcile", last.at_ms, 3, "Stripe 503", last.at_ms, last.at_ms)
            ]
        },
    )
    return FrozenTop(source=source, refresh_s=60, thresholds=Thresholds())


async def test_key_7_lists_every_scheduler_with_its_next_run_and_the_late_one_as_missed():
    app = top()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("7")
        await settle(pilot)
        assert isinstance(app.screen, SchedulersScreen)
        shown = {r[1]: r for r in rows(app)}
        assert list(shown) == ["payment-reconcile", "daily-report", "task-due-soon", "impersonation-cleanup"]
        due_soon = shown["task-due-soon"]
        assert due_soon[:4] == ["task-notifications", "task-due-soon", "task.due-soon", "every 5m"]
        assert due_soon[4].startswith("[b red]MISSED by 11m[/b red]")
        assert "completed" in due_soon[5] and due_soon[6].startswith("repeat:task-due-soon:")
        reconcile = shown["payment-reconcile"]
        assert reconcile[4].startswith("in 4m ") and "failed" in reconcile[5]
        assert shown["daily-report"][3] == "cron 0 9 * * * Europe/Paris"
        assert shown["daily-report"][5:] == ["not yet", "-"]
        assert shown["impersonation-cleanup"][5:] == ["[yellow]gone[/yellow]", "-"]


async def test_enter_opens_the_last_runs_job_and_n_the_next_runs_job():
    app = top()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("7")
        await settle(pilot)
        await pilot.press("enter")  # the first row: payment-reconcile, whose last run failed
        await settle(pilot)
        assert isinstance(app.screen, JobScreen)
        assert (app.screen.queue, app.screen.job_id) == (
            "billing-payment-sync",
            schedulers()[0].last_run.job_id,
        )
        assert "state failed" in str(app.screen.query_one("#job").render())
        await pilot.press("escape")
        await pilot.press("n")
        await settle(pilot)
        assert isinstance(app.screen, JobScreen)
        assert app.screen.job_id == f"repeat:payment-reconcile:{schedulers()[0].next_ms}"


async def test_enter_on_a_scheduler_that_never_ran_says_so_and_stays():
    app = top()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("7", "down")
        await settle(pilot)
        await pilot.press("enter")  # daily-report: not run yet
        await settle(pilot)
        assert isinstance(app.screen, SchedulersScreen)
        assert any("daily-report has not run yet" in str(n.message) for n in app._notifications)


async def test_slash_filters_the_schedulers_by_queue_id_name_or_schedule():
    app = top()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("7", "slash", *"cron", "enter")
        await settle(pilot)
        assert [r[1] for r in rows(app)] == ["daily-report"]


async def test_enter_on_the_missed_finding_opens_the_schedulers_view():
    app = top()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, QueuesScreen)
        badges = {r[0]: r[-1] for r in rows(app)}
        assert "MISSED" in badges["task-notifications"] and "MISSED" not in badges["billing-payment-sync"]
        missed = [f for f in app.state.findings if f.kind == "scheduler-missed"]
        assert [f.subject for f in missed] == ["task-notifications"]
        await pilot.press("f")
        for _ in range(app.state.findings.index(missed[0])):
            await pilot.press("down")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, SchedulersScreen)


def test_schedulers_view_looks_as_approved(snap_compare):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("7")
        await settle(pilot)

    assert snap_compare(top(), run_before=run_before, terminal_size=SIZE)
