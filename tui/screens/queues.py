"""View 1: every queue with its counts, per-minute sparklines, oldest waiting age, drain ETA and badges; under
them the findings (what is wrong, why, the key and command that act on it; `enter` on one shows its evidence)
and the last few events."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from pool.monitor.findings import Finding, badges
from pool.monitor.snapshot import Snapshot
from tui.format import age, drain_eta, last_known, spark
from tui.screens.base import Base
from tui.screens.evidence import open_queue, show_evidence
from tui.widgets.findings_pane import FindingsPane
from tui.widgets.recent_events import recent_events


class QueuesScreen(Base):
    filterable = True
    BINDINGS = [
        Binding("enter", "open", "open queue", show=True),
        Binding("space", "pause", "pause/resume"),
        Binding("slash", "filter", "filter"),
        Binding("f", "focus_findings", "findings"),
        Binding("escape", "focus_queues", "queues", show=False),
    ]
    COLUMNS = (
        "queue",
        "wait",
        "active",
        "delayed",
        "prio",
        "failed",
        "done/min",
        "fail/min",
        "oldest",
        "eta",
        "workers",
        "alerts",
    )

    def body(self) -> ComposeResult:
        table: DataTable[Any] = DataTable(id="queues", cursor_type="row", zebra_stripes=True)
        table.add_columns(*self.COLUMNS)
        yield table
        pane = FindingsPane(id="findings")
        pane.border_title = "findings: f or tab, ↑/↓, enter shows the evidence"
        yield pane
        strip = Static("", id="recent")
        strip.border_title = "recent events (2: all)"
        yield strip

    def render_snapshot(self, snapshot: Snapshot) -> None:
        super().render_snapshot(snapshot)
        found = self.matop.state.findings
        self.fill(
            [
                (
                    q.name,
                    (
                        q.name,
                        q.counts["waiting"],
                        q.counts["active"],
                        q.counts["delayed"],
                        q.counts["prioritized"],
                        q.counts["failed"],
                        spark(q.completed_per_min),
                        spark(q.failed_per_min),
                        age(q.oldest_waiting_s),
                        drain_eta(q, snapshot.recent, self.matop.thresholds.rate_window_s),
                        q.workers,
                        " ".join([*badges(found, q.name), last_known(snapshot)]).strip(),
                    ),
                )
                for q in snapshot.queues
                if self.matches(q.name)
            ]
        )
        self.query_one(FindingsPane).show(found)
        self.query_one("#recent", Static).update(recent_events(self.matop.state.event_rows()))

    def action_open(self) -> None:
        """Drill into the queue: its failed jobs if it has any, else its waiting ones."""
        if (name := self.selected_key()) is not None:
            open_queue(self.matop, name)

    def action_focus_findings(self) -> None:
        self.query_one(FindingsPane).focus()

    def action_focus_queues(self) -> None:
        self.query_one(DataTable).focus()

    async def on_findings_pane_chosen(self, event: FindingsPane.Chosen) -> None:
        event.stop()
        if not await show_evidence(self.matop, event.finding.goto):
            self._select_row(event.finding)

    def _select_row(self, finding: Finding) -> None:
        """The finding's subject in the queues table, the filter cleared if it hid the row."""
        keys = [str(row.key.value) for row in self.query_one(DataTable).ordered_rows]
        if finding.subject not in keys and self.filter_text and self.matop.state.snapshot is not None:
            self.set_filter("")
            self.render_snapshot(self.matop.state.snapshot)
            keys = [str(row.key.value) for row in self.query_one(DataTable).ordered_rows]
        table = self.query_one(DataTable)
        if finding.subject in keys:
            table.move_cursor(row=keys.index(finding.subject))
            table.focus()
        else:
            self.app.notify(f"{finding.subject} has no row in the queues table")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:  # enter on the table
        event.stop()
        self.action_open()

    async def action_pause(self) -> None:
        app = self.matop
        if isinstance(self.focused, FindingsPane):  # space acts on the queue under the table's cursor only
            return
        if (name := self.selected_key()) is None or not app.allowed("pause/resume"):
            return
        stats = app.state.snapshot.queue(name) if app.state.snapshot else None
        paused = not (stats and stats.paused)
        await app.source.set_paused(name, paused)
        await app.source.journal("pause" if paused else "resume", name)
        app.notify_action(f"{'paused' if paused else 'resumed'} {name}")
        await app.refresh_now()
