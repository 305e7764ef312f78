"""View 1: every queue with its counts, per-minute sparklines, oldest waiting age, drain ETA and badges, and
under them the findings: what is wrong, why, and the key and command that act on it."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from pool.monitor.collector import Snapshot
from pool.monitor.findings import Finding, badges
from tui.format import age, drain_eta, last_known, spark
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
        yield Static("", id="findings")

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
                        drain_eta(q, self.matop.state.history),
                        q.workers,
                        " ".join([*badges(found, q.name), last_known(snapshot)]).strip(),
                    ),
                )
                for q in snapshot.queues
                if self.matches(q.name)
            ]
        )
        self.query_one("#findings", Static).update(_pane(found))

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


COLORS = {"critical": "red", "warning": "yellow", "info": "cyan"}
PANE_SHOWN = 4
"""Findings shown under the table (two lines each), most severe first; `ma-top --once` lists every one."""


def _pane(found: list[Finding]) -> str:
    if not found:
        return "[green]no findings[/green]"
    lines = []
    for f in found[:PANE_SHOWN]:
        color = COLORS[f.severity]
        lines.append(
            f"[{color}]{f.severity.upper():8}[/{color}] [b]{escape(f.subject)}[/b]: {escape(f.cause)}"
        )
        lines.append(f"{'':9}[dim]{escape(f.evidence)} → {escape(f.action)}[/dim]")
    if len(found) > PANE_SHOWN:
        lines.append(f"[dim]… {len(found) - PANE_SHOWN} more (ma-top --once lists them all)[/dim]")
    return "\n".join(lines)
