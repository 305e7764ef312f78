"""The events view's numbers: a row counts events (not items), spans the real window, names every host:pid,
and sits in the events' own time order (late deliveries after an outage included)."""

from __future__ import annotations

from textual.widgets import DataTable

from pool.monitor.events import EventRow, coalesce
from pool.monitor.findings import Thresholds
from tests.support.fake_source import FakeSource, queue_stats
from tests.support.pilot import settle
from tui import format_events
from tui.app import MaTop
from tui.state import EVENTS_KEPT, TopState

T0 = 1_795_000_000_000
THROTTLE = "Billing usage aggregation throttled"


def event(ts: int, kind: str = "throttled", message: str = THROTTLE, **more: str) -> dict[str, str]:
    return {"ts": str(ts), "kind": kind, "queue": "billing-usage", "message": message, **more}


def window(opened: int, repeats: int, span_ms: int, **more: str) -> list[dict[str, str]]:
    """What a slot writes for one throttle window: the first throttle at once, the repeats when it closes."""
    return [
        event(opened, count="1", **more),
        event(
            opened + 30_000, count=str(repeats), since=str(opened + 50), until=str(opened + span_ms), **more
        ),
    ]


def only(rows: list[EventRow]) -> EventRow:
    assert len(rows) == 1, rows
    return rows[0]


def test_a_scheduled_task_that_purged_six_rows_is_one_event_not_six():
    task = "Expired sessions purged: 6"
    current = event(T0, "scheduled-task", task, items="6")
    older = event(T0 + 1, "scheduled-task", task, count="6")  # a record written before `items` existed
    row = only(coalesce([current, older]))
    assert (row.events, row.total) == (2, None)
    assert (format_events.times(row), format_events.total(row)) == ("×2", "")
    single = only(coalesce([current]))
    assert (format_events.times(single), format_events.total(single)) == ("", "")


def test_a_throttle_window_counts_two_events_for_648_throttles_over_its_real_30_seconds():
    row = only(coalesce(window(T0, 647, 29_600)))
    assert (row.events, row.total, row.span_s) == (2, 648, 29.6)
    assert format_events.times(row) == "×2 in 30s"
    assert format_events.total(row) == "648 throttles"


def test_a_window_event_alone_still_shows_the_span_it_stands_for():
    row = only(coalesce(window(T0, 647, 29_600)[1:]))
    assert (row.events, row.total, row.first_ms) == (1, 647, T0 + 50)
    assert (format_events.times(row), format_events.total(row)) == ("×1 in 30s", "647 throttles")


def test_windows_of_a_minute_start_from_each_records_own_start():
    rows = coalesce([*window(T0, 10, 20_000), *window(T0 + 70_000, 5, 10_000)])
    assert [(r.events, r.total) for r in rows] == [(2, 11), (2, 6)]
    assert [format_events.times(r) for r in rows] == ["×2 in 20s", "×2 in 10s"]  # to the last throttle


def test_bulk_failures_are_counted_as_items_apart_from_their_events():
    bulk = "Super admin bulk job operation failed (bulk job b1, suspend)"
    records = [
        event(T0 + i * 1000, "bulk-item-failed", bulk, count=str(n), since=str(T0 + i * 1000 - 990))
        for i, n in enumerate((1, 1200, 1199, 599))
    ]
    row = only(coalesce(records))
    assert (row.events, row.total) == (4, 2999)
    assert format_events.times(row) == "×4 in 4s"
    assert format_events.total(row) == "2,999 failed items"


def test_a_coalesced_row_names_every_host_and_pid():
    procs = [("h2", "7"), ("h1", "102"), ("h1", "101"), ("h1", "9"), ("h1", "101")]
    row = only(coalesce([event(T0 + i, host=h, pid=p) for i, (h, p) in enumerate(procs)]))
    assert row.where() == {"h1": ["9", "101", "102"], "h2": ["7"]}
    assert format_events.where(row) == "h1:9,101,102 h2:7"
    many = only(coalesce([event(T0 + i, host=f"host-{i % 3}", pid=str(1000 + i)) for i in range(12)]))
    assert format_events.where(many) == "12 procs on 3 hosts"
    one_host = only(coalesce([event(T0 + i, host="host-a", pid=str(1000 + i)) for i in range(12)]))
    assert format_events.where(one_host) == "host-a: 12 procs"


def test_events_delivered_late_after_an_outage_are_put_back_in_their_own_time_order():
    state = TopState()
    state.add_events([("100-0", event(T0, "failed", "boom", host="h", pid="1"))])
    state.add_events(
        [
            ("200-0", event(T0 + 20_000, "redis-recovered", "Redis connection recovered after 12.0s")),
            ("201-0", event(T0 + 8_000, "redis-connection-error", "Redis connection failed: refused")),
            ("202-0", event(T0 + 9_000, "failed", "boom", host="h", pid="2")),
        ]
    )
    assert state.last_event == "202-0"
    assert [e["ts"] for e in state.events] == [str(T0 + s) for s in (0, 8_000, 9_000, 20_000)]
    rows = state.event_rows()
    assert [r.kind for r in rows] == ["failed", "redis-connection-error", "redis-recovered"]
    assert (rows[0].events, format_events.times(rows[0]), format_events.where(rows[0])) == (
        2,
        "×2 in 9s",
        "h:1,2",
    )
    state.add_events([("203-0", event(T0 + 1_000, "stalled", "job 7 stalled"))])
    assert [r.kind for r in state.event_rows()][:2] == ["failed", "stalled"]  # made again after a read


def test_the_state_keeps_the_newest_events_by_their_own_time():
    state = TopState()
    state.add_events([(f"{i}-0", event(T0 + 10 * i)) for i in range(EVENTS_KEPT)])
    state.add_events([("late-0", event(T0 - 1)), ("new-0", event(T0 + 10 * EVENTS_KEPT))])
    assert len(state.events) == EVENTS_KEPT
    assert state.events[0]["ts"] == str(T0 + 10) and state.events[-1]["ts"] == str(T0 + 10 * EVENTS_KEPT)


async def test_the_events_view_shows_events_what_they_stand_for_and_every_process():
    late = event(T0 + 5_000, "redis-connection-error", "Redis connection failed", host="h2", pid="7")
    source = FakeSource(
        queues=[queue_stats("billing-usage")],
        events=[
            *[(f"{i + 1}-0", e) for i, e in enumerate(window(T0, 647, 29_600, host="h1", pid="101"))],
            ("3-0", event(T0 + 31_000, count="1", host="h1", pid="102")),
            ("4-0", late),
        ],
    )
    app = MaTop(source=source, refresh_s=3600, thresholds=Thresholds())
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        table = app.screen.query_one(DataTable)
        shown = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
    assert [r[1:] for r in shown] == [  # newest first, by the events' own time
        ["redis-connection-error", "billing-usage", "", "", "h2:7", "Redis connection failed"],
        ["throttled", "billing-usage", "×3 in 31s", "649 throttles", "h1:101,102", THROTTLE],
    ]
