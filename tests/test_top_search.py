"""ma-top's search (`/` in a queue's job list) and who-floods-it (`t`), key by key over the in-memory source (the
same matcher as the live source): the scan's honest summary, the cap, a bad expression named, esc cancelling a
scan, bulk actions on exactly the ids matched when confirmed (journaled), read-only refusals, and how the result
and the top values look (SVG snapshots)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from textual.widgets import Input, Static

from pool.monitor.findings import Thresholds
from pool.monitor.queries import JobRow
from pool.monitor.search import SearchProgress, SearchResult
from tests.support.fake_source import T0, FakeSource, queue_stats
from tests.support.pilot import settle
from tests.support.top import rows
from tui.app import MaTop
from tui.screens.modals import ConfirmScreen
from tui.screens.search import SearchScreen
from tui.screens.top_values import TopValuesScreen

Q = "billing-usage"
NOW_MS = int(T0 * 1000)


def failed_jobs(n: int, prefix: str = "f") -> list[JobRow]:
    """`n` failed jobs, newest first, a minute apart; even ones timed out, odd ones were refused."""
    return [
        JobRow(
            f"{prefix}{i}",
            "usage.aggregate",
            NOW_MS - (n - i) * 60_000,
            3 if i % 3 == 0 else 1,
            "identity timeout after 10s" if i % 2 == 0 else "403 refused",
            0,
            NOW_MS - (n - i) * 60_000 + 1000,
        )
        for i in reversed(range(n))
    ]


def source(n: int = 40, **extra: Any) -> FakeSource:
    jobs = failed_jobs(n)
    fake = FakeSource(
        queues=[queue_stats(Q, failed=n, waiting=6)],
        jobs={(Q, "failed"): jobs, (Q, "waiting"): failed_jobs(6, "w")},
        payloads={
            (Q, j.id): {"organizationId": "org_acme" if int(j.id[1:]) % 4 else "org_beta"} for j in jobs
        },
        now_ms=NOW_MS,
        **extra,
    )
    for i, j in enumerate(fake.jobs[(Q, "waiting")]):
        fake.payloads[(Q, j.id)] = {"organizationId": "org_flood" if i < 4 else "org_calm"}
    return fake


class FrozenTop(MaTop):
    def now(self) -> datetime:
        return datetime.fromtimestamp(T0)


def top(fake: FakeSource, *, read_only: bool = False) -> MaTop:
    return FrozenTop(source=fake, refresh_s=3600, read_only=read_only, thresholds=Thresholds())


async def open_search(pilot: Any, expression: str) -> None:
    """Queue view of Q (failed), `/`, type the expression, enter; wait for the scan."""
    await settle(pilot)
    await pilot.press("enter")  # Q is the only queue: its failed jobs
    await settle(pilot)
    await pilot.press("slash")
    await settle(pilot)
    assert isinstance(pilot.app.screen, SearchScreen)
    box = pilot.app.screen.query_one("#expr", Input)
    box.value = expression
    await pilot.press("enter")
    await settle(pilot)


def progress(app: Any) -> str:
    return str(app.screen.query_one("#progress", Static).render())


async def test_slash_searches_the_states_jobs_and_says_what_was_scanned_and_matched():
    fake = source()
    app = top(fake)
    async with app.run_test(size=(140, 40)) as pilot:
        await open_search(pilot, "reason~timeout attempts>=3")
        shown = rows(app)
        assert progress(app).startswith("scanned 40 of 40 failed, 7 matched")
    expected = [j.id for j in fake.jobs[(Q, "failed")] if int(j.id[1:]) % 6 == 0]
    assert [r[0] for r in shown] == expected, "exactly the matching ids, newest first"
    assert fake.calls[-1] == ("search", Q, ("failed",), "reason~timeout attempts>=3", 10_000)


async def test_the_cap_is_said_when_it_cut_the_scan_short():
    fake = source()
    app = top(fake)
    app.search_cap = 25
    async with app.run_test(size=(140, 40)) as pilot:
        await open_search(pilot, "name=usage.aggregate")
        assert "scanned 25 of 40 failed (cap 25: cut short), 25 matched" in progress(app)


async def test_a_bad_expression_is_an_error_naming_the_token_and_no_action_follows():
    fake = source()
    app = top(fake)
    async with app.run_test(size=(140, 40)) as pilot:
        await open_search(pilot, "attempts>>3")
        text = progress(app)
        assert ">>3" in text or "'>" in text, text
        assert rows(app) == []
        await pilot.press("R")
        await settle(pilot)
        assert not isinstance(app.screen, ConfirmScreen)
    assert not [c for c in fake.calls if c[0] == "act"]


async def test_requeue_acts_on_exactly_the_ids_matched_when_confirmed_and_is_journaled():
    fake = source()
    app = top(fake)
    async with app.run_test(size=(140, 40)) as pilot:
        await open_search(pilot, "data.organizationId=org_beta")
        matched = [r[0] for r in rows(app)]
        assert len(matched) == 10
        # a job failing after the search (before the confirm) matches too, but was not matched: not touched
        late = JobRow("late", "usage.aggregate", NOW_MS, 1, "x", 0, NOW_MS)
        fake.jobs[(Q, "failed")].insert(0, late)
        fake.payloads[(Q, "late")] = {"organizationId": "org_beta"}
        await pilot.press("R")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        question = app.screen.question
        assert "requeue 10 job(s)" in question and "usage.aggregate 10" in question, question
        await pilot.press("y")
        await settle(pilot)
        assert [r[0] for r in rows(app)] == ["late"], "read again after the action: only the late failure"
    (act,) = [c for c in fake.calls if c[0] == "act"]
    assert act == ("act", Q, "requeue", matched, "data.organizationId=org_beta")
    assert [j.id for j in fake.jobs[(Q, "failed")]][:1] == ["late"], "the late failure is still failed"
    (entry,) = fake.journal_entries
    assert (
        entry["action"] == "requeue" and entry["ids"] == matched and entry["outcome"] == "done 10, skipped 0"
    )


async def test_n_declines_and_read_only_refuses_every_bulk_action():
    fake = source()
    app = top(fake)
    async with app.run_test(size=(140, 40)) as pilot:
        await open_search(pilot, "reason~refused")
        await pilot.press("X")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen) and "remove 20 job(s)" in app.screen.question
        await pilot.press("n")
        await settle(pilot)
        await pilot.press("P")  # promote: no delayed job among the matches
        await settle(pilot)
        assert "no delayed job among the matches" in app.message
    assert not [c for c in fake.calls if c[0] == "act"]

    ro = source()
    app = top(ro, read_only=True)
    async with app.run_test(size=(140, 40)) as pilot:
        await open_search(pilot, "reason~refused")
        await pilot.press("R")
        await settle(pilot)
        assert not isinstance(app.screen, ConfirmScreen) and "read-only" in app.message
    assert not [c for c in ro.calls if c[0] == "act"]


async def test_a_all_states_and_remove_takes_every_state_but_active():
    fake = source()
    app = top(fake)
    async with app.run_test(size=(140, 40)) as pilot:
        await open_search(pilot, "name=usage.aggregate")
        await pilot.press("a")
        await settle(pilot)
        states = fake.calls[-1][2]
        assert "waiting" in states and "failed" in states and "active" in states
        assert "46 matched" in progress(app)
        await pilot.press("X")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
    (act,) = [c for c in fake.calls if c[0] == "act"]
    assert act[2] == "remove" and len(act[3]) == 46
    assert fake.jobs[(Q, "failed")] == [] and fake.jobs[(Q, "waiting")] == []


class SlowSource(FakeSource):
    """A scan that reports one batch and then waits: what esc cancels."""

    started: asyncio.Event | None = None

    async def search(
        self,
        queue: str,
        states: Sequence[str],
        expression: str,
        cap: int = 10_000,
        progress: Callable[[SearchProgress], None] | None = None,
    ) -> SearchResult:
        if progress:
            progress(SearchProgress(queue, states[0], 500, 3, 90_000))
        assert self.started is not None
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("not cancelled")


async def test_esc_cancels_a_running_scan_then_leaves():
    fake = SlowSource(queues=[queue_stats(Q, failed=3)], jobs={(Q, "failed"): failed_jobs(3)}, now_ms=NOW_MS)
    fake.started = asyncio.Event()
    app = top(fake)
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot)
        await pilot.press("enter", "slash")
        await pilot.pause()
        app.screen.query_one("#expr", Input).value = "reason~x"
        await pilot.press("enter")
        await fake.started.wait()
        await pilot.pause()
        assert "500 of 90,000 scanned, 3 matched" in progress(app) and "esc cancels" in progress(app)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, SearchScreen) and progress(app) == "search cancelled"
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, SearchScreen)


async def test_t_shows_who_floods_the_queue_with_counts_share_and_the_sample_size():
    fake = source()
    app = top(fake)
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot)
        await pilot.press("enter", "t")
        await settle(pilot)
        assert isinstance(app.screen, TopValuesScreen)
        assert rows(app) == [["org_flood", "4", "67%"], ["org_calm", "2", "33%"]]
        assert "data.organizationId over 6 waiting job(s)" in progress(app)
        app.screen.query_one("#field", Input).value = "name"
        await pilot.press("slash", "enter")
        await settle(pilot)
        assert rows(app) == [["usage.aggregate", "6", "100%"]]
        await pilot.press("s")  # waiting -> delayed: none
        await settle(pilot)
        assert rows(app) == [] and "over 0 delayed" in progress(app)


def test_the_search_result_looks_as_approved(snap_compare):
    async def run_before(pilot: Any) -> None:
        await open_search(pilot, "reason~timeout")

    assert snap_compare(top(source()), run_before=run_before, terminal_size=(120, 36))


def test_who_floods_it_looks_as_approved(snap_compare):
    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("enter", "t")
        await settle(pilot)

    assert snap_compare(top(source()), run_before=run_before, terminal_size=(120, 36))
