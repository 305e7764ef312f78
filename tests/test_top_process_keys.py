"""ma-top's process keys (restart, stop, start; the whole program one process at a time) against an in-memory
DataSource (tests/support/fake_source.py): no Valkey, no supervisord. As tests/test_top_keys.py."""

from __future__ import annotations

from textual.widgets import Static

from tests.support.fake_source import process
from tests.support.pilot import settle
from tests.support.top import rows
from tests.support.top_pilot import SOCK, keys, top, with_processes
from tui.screens import ConfirmScreen

Q = "identity-events"
SIZE = (140, 40)


async def test_process_keys_restart_stop_and_start_the_process_under_the_cursor():
    source = with_processes()
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "3")
        assert [r[0] for r in rows(app)] == [
            "billing-usage:billing-usage_00",
            "billing-usage:billing-usage_01",
            f"{Q}:{Q}_00",
        ]
        assert rows(app)[0][6] == "64" and rows(app)[0][9] == "host-a"
        await keys(pilot, "s")
        await keys(pilot, "down", "x")
        await keys(pilot, "down", "a")
        await keys(pilot, "l")
        assert "last line" in str(app.screen.query_one("#tail", Static).render())
    assert source.calls == [
        ("control_process", SOCK, "billing-usage:billing-usage_00", "restart"),
        ("control_process", SOCK, "billing-usage:billing-usage_01", "stop"),
        ("control_process", SOCK, f"{Q}:{Q}_00", "start"),
    ]
    assert [e["target"] for e in source.journal_entries] == [
        "host-a billing-usage:billing-usage_00",
        "host-a billing-usage:billing-usage_01",
        f"host-a {Q}:{Q}_00",
    ]


async def test_capital_s_restarts_the_whole_program_one_process_at_a_time_after_a_confirm():
    source = with_processes()
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "3")
        await pilot.press("down", "S")
        assert (
            isinstance(app.screen, ConfirmScreen) and "billing-usage (2 process(es))" in app.screen.question
        )
        await keys(pilot, "y")
    assert source.calls == [
        ("rolling_restart", SOCK, ["billing-usage:billing-usage_00", "billing-usage:billing-usage_01"])
    ]
    assert source.journal_entries[0]["outcome"] == "2 restarted"


async def test_a_new_pid_for_the_same_process_counts_as_a_restart():
    source = with_processes()
    app = top(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        source.procs[0] = process(SOCK, "billing-usage", 0, 201)
        await app.refresh_processes()
        await keys(pilot, "3")
        assert [r[4] for r in rows(app)] == ["1", "0", "0"]
