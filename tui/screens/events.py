"""View 2: the `ma:events` stream across hosts, newest first, in the events' own time order; repeats
coalesced as `×N in Ns` (N events, over their real span), with what counted kinds stand for (`648 throttles`)
and every host:pid."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable

from pool.monitor.snapshot import Snapshot
from tui import format_events
from tui.format import when
from tui.screens.base import Base

SHOWN = 200


class EventsScreen(Base):
    filterable = True
    BINDINGS = [Binding("escape", "app.show_view('queues')", "back"), Binding("slash", "filter", "filter")]

    def body(self) -> ComposeResult:
        table: DataTable[Any] = DataTable(id="events", cursor_type="row", zebra_stripes=True)
        table.add_columns("time", "kind", "queue", "×", "stands for", "where", "message")
        yield table

    def render_snapshot(self, snapshot: Snapshot) -> None:
        super().render_snapshot(snapshot)
        table = self.query_one(DataTable)
        table.clear()
        shown = [r for r in self.matop.state.event_rows() if self.matches(r.kind, r.queue, r.message)]
        for r in reversed(shown[-SHOWN:]):
            table.add_row(
                when(r.first_ms),
                r.kind,
                r.queue,
                format_events.times(r),
                format_events.total(r),
                format_events.where(r),
                r.message[:90],
            )
