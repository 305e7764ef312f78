"""View 6: bulk jobs, live from `super-admin.bulk-job.metrics`, with the last-state records for older ones."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable

from pool.monitor.snapshot import Snapshot
from tui.format import age
from tui.screens.base import Base

SILENT_AFTER_S = 30
"""A running bulk job not heard from for this long is marked silent (its publisher may be gone)."""


class BulkScreen(Base):
    BINDINGS = [Binding("escape", "app.show_view('queues')", "back")]

    def body(self) -> ComposeResult:
        table: DataTable[Any] = DataTable(id="bulk", cursor_type="row", zebra_stripes=True)
        table.add_columns(
            "bulk job", "operation", "status", "progress", "failed", "items/s", "last heard", "where"
        )
        yield table

    def render_snapshot(self, snapshot: Snapshot) -> None:
        super().render_snapshot(snapshot)
        table = self.query_one(DataTable)
        table.clear()
        for job in self.matop.state.bulk_jobs(snapshot):
            heard = snapshot.taken_at - job.updated_at
            running = job.status in ("running", "throttled")
            stale = " [red](silent)[/red]" if running and heard > SILENT_AFTER_S else ""
            table.add_row(
                job.bulk_job_id,
                job.operation,
                job.status,
                f"{job.processed}/{job.total}",
                job.failed,
                f"{job.throughput_per_sec:.1f}",
                age(heard) + stale,
                f"{job.host}:{job.pid}",
            )
