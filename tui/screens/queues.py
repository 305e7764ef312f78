"""View 1: every queue with its counts, per-minute sparklines, oldest waiting age, drain ETA and alerts."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable

from pool.monitor.alerts import alerts
from pool.monitor.collector import Snapshot
from tui.format import age, drain_eta, spark
from tui.screens.base import Base
from tui.screens.queue_jobs import QueueScreen


class QueuesScreen(Base):
    filterable = True
    BINDINGS = [
        Binding("enter", "open", "open queue", show=True),
        Binding("space", "pause", "pause/resume"),
        Binding("slash", "filter", "filter"),
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

    def render_snapshot(self, snapshot: Snapshot) -> None:
        super().render_snapshot(snapshot)
        thresholds = self.matop.thresholds
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
                        drain_eta(q, self.matop.state.history),
                        q.workers,
                        " ".join(alerts(q, thresholds)),
                    ),
                )
                for q in snapshot.queues
                if self.matches(q.name)
            ]
        )

    def action_open(self) -> None:
        """Drill into the queue: its failed jobs if it has any, else its waiting ones."""
        if (name := self.selected_key()) is not None:
            snapshot = self.matop.state.snapshot
            stats = snapshot.queue(name) if snapshot else None
            self.app.push_screen(
                QueueScreen(name, "failed" if stats and stats.counts["failed"] else "waiting")
            )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:  # enter on the table
        event.stop()
        self.action_open()

    async def action_pause(self) -> None:
        app = self.matop
        if (name := self.selected_key()) is None or not app.allowed("pause/resume"):
            return
        stats = app.state.snapshot.queue(name) if app.state.snapshot else None
        paused = not (stats and stats.paused)
        await app.source.set_paused(name, paused)
        await app.source.journal("pause" if paused else "resume", name)
        app.notify_action(f"{'paused' if paused else 'resumed'} {name}")
        await app.refresh_now()
