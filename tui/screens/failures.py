"""View 5: failed jobs grouped by signature (normalized reason + top frame); `R` requeues a whole group."""

from __future__ import annotations

import time
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable

from pool.monitor.queries import FailureGroup
from pool.monitor.snapshot import Snapshot
from tui.format import when
from tui.screens.base import Base
from tui.screens.modals import ConfirmScreen

RELOAD_S = 5.0
"""Grouping reads failed jobs: it runs on its own slower timer, not on every tick."""


class FailuresScreen(Base):
    BINDINGS = [
        Binding("escape", "app.show_view('queues')", "back"),
        Binding("R", "requeue_group", "requeue group"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.groups: list[FailureGroup] = []
        self.loaded_at = 0.0
        self.pending_queue: str | None = None
        """A queue whose first group the cursor goes to after the next read (enter on a finding)."""

    def body(self) -> ComposeResult:
        table: DataTable[Any] = DataTable(id="failures", cursor_type="row", zebra_stripes=True)
        table.add_columns("queue", "count", "first", "last", "jobs", "signature", "top frame")
        yield table

    def render_snapshot(self, snapshot: Snapshot) -> None:
        super().render_snapshot(snapshot)
        if time.monotonic() - self.loaded_at >= RELOAD_S:
            self.loaded_at = time.monotonic()
            queues = [q.name for q in snapshot.queues if q.counts["failed"]]
            self.run_worker(self.load(queues), exclusive=True, group="failures", exit_on_error=False)

    async def load(self, queues: list[str]) -> None:
        groups = await self.matop.source.failure_groups(queues)
        if not self.is_mounted or self.app.screen is not self:
            return
        self.groups = groups
        table = self.query_one(DataTable)
        row = table.cursor_row
        table.clear()
        for i, g in enumerate(groups):
            table.add_row(
                g.queue,
                g.count,
                when(g.first_seen),
                when(g.last_seen),
                ", ".join(g.names)[:30],
                g.signature[:70],
                g.top_frame,
                key=str(i),
            )
        if groups:
            table.move_cursor(row=min(row, len(groups) - 1))
        if self.pending_queue is not None:
            self._select_queue(self.pending_queue)
            self.pending_queue = None

    def _select_queue(self, queue: str) -> None:
        first = next((i for i, g in enumerate(self.groups) if g.queue == queue), None)
        if first is None:  # retried attempts that later succeeded leave no failed job behind
            self.app.notify(f"no failed jobs on {queue} now")
        else:
            self.query_one(DataTable).move_cursor(row=first)

    def action_requeue_group(self) -> None:
        app = self.matop
        table = self.query_one(DataTable)
        if not table.row_count or not app.allowed("requeue group"):
            return
        group = self.groups[table.cursor_row]
        ids = list(group.ids)  # the group as shown when the key was pressed

        async def decided(yes: bool | None) -> None:
            if not yes:
                return
            done, skipped = await app.source.requeue(group.queue, ids)
            await app.source.journal(
                "requeue group", f"{group.queue} {group.signature}", ids, f"{done} done, {skipped} skipped"
            )
            app.notify_action(f"requeued {done} job(s) of the group, {skipped} skipped")
            self.loaded_at = 0.0

        self.app.push_screen(
            ConfirmScreen(
                f"requeue {len(ids)} failed job(s) of {group.queue}?\n{group.example[:200]}\n"
                f"names: {', '.join(group.names)[:150]}\nfirst {when(group.first_seen)}  last {when(group.last_seen)}"
            ),
            decided,
        )
