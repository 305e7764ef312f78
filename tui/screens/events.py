"""View 2: the `ma:events` stream across hosts, newest first, repeats coalesced as `×N in Ns`."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable

from pool.monitor.collector import Snapshot
from pool.monitor.queries import coalesce
from tui.format import when
from tui.screens.base import Base

SHOWN = 200


class EventsScreen(Base):
    filterable = True
    BINDINGS = [Binding("escape", "app.show_view('queues')", "back"), Binding("slash", "filter", "filter")]

    def body(self) -> ComposeResult:
        table: DataTable[Any] = DataTable(id="events", cursor_type="row", zebra_stripes=True)
        table.add_columns("time", "kind", "queue", "×", "message", "where")
        yield table

    def render_snapshot(self, snapshot: Snapshot) -> None:
        super().render_snapshot(snapshot)
        table = self.query_one(DataTable)
        table.clear()
        shown = [
            e
            for e in coalesce(self.matop.state.events)
            if self.matches(e.get("kind"), e.get("queue"), e.get("message"))
        ]
        for e in reversed(shown[-SHOWN:]):
            times = f"×{e['count']} in {e['last'] - e['first']:.0f}s" if e["count"] > 1 else ""
            table.add_row(
                when(int(e["first"] * 1000)),
                e.get("kind", ""),
                e.get("queue", ""),
                times,
                e.get("message", "")[:90],
                f"{e.get('host', '')}:{e.get('pid', '')}",
            )
