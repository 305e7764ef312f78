"""Who floods this queue (`t` in a queue's job list): the most common values of a payload field over a bounded
sample of its waiting jobs, with counts and share. The sample size is always stated."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Input, Static
from textual.worker import Worker, WorkerState

from pool.monitor.filters import FilterError
from pool.monitor.search import TopValues
from pool.monitor.snapshot import Snapshot
from tui.screens.base import Base

DEFAULT_FIELD = "data.organizationId"


class TopValuesScreen(Base):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "back"),
        Binding("slash", "edit", "field"),
        Binding("s", "state", "waiting / delayed / failed"),
    ]
    STATES = ("waiting", "delayed", "failed", "prioritized")

    def __init__(self, queue: str, field: str = DEFAULT_FIELD) -> None:
        super().__init__()
        self.queue = queue
        self.field = field
        self.state = "waiting"
        self.read: Worker[TopValues] | None = None

    def body(self) -> ComposeResult:
        yield Input(self.field, placeholder="name, data.organizationId, data.tenantId …", id="field")
        yield Static("", id="progress")
        table: DataTable[Any] = DataTable(id="values", cursor_type="row", zebra_stripes=True)
        table.add_columns("value", "jobs", "share")
        yield table

    def on_mount(self) -> None:  # Base.on_mount runs after this one (Textual calls each class's handler)
        self.load()

    def render_snapshot(self, snapshot: Snapshot) -> None:
        super().render_snapshot(snapshot)  # read once per field, not per tick

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        event.prevent_default()  # the base's `/` row filter is not this screen's

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        event.prevent_default()
        self.field = event.value.strip() or DEFAULT_FIELD
        self.load()

    def action_edit(self) -> None:
        self.query_one("#field", Input).focus()

    def action_state(self) -> None:
        self.state = self.STATES[(self.STATES.index(self.state) + 1) % len(self.STATES)]
        self.load()

    def load(self) -> None:
        self.query_one("#progress", Static).update(f"reading {self.state} jobs of {self.queue} …")
        self.read = self.run_worker(self._read(), exclusive=True, group="top", exit_on_error=False)

    async def _read(self) -> TopValues:
        return await self.matop.source.top_values(self.queue, self.field, self.matop.search_cap, self.state)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self.read:
            return
        status = self.query_one("#progress", Static)
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            status.update(
                f"[red]{error if isinstance(error, FilterError) else f'read failed: {error}'}[/red]"
            )
            return
        if event.state != WorkerState.SUCCESS or not isinstance(event.worker.result, TopValues):
            return
        top = event.worker.result
        cut = f" (the newest {top.sampled:,} of {top.total:,})" if top.sampled < top.total else ""
        status.update(
            f"[b]{self.queue}[/b] {top.field} over {top.sampled:,} {top.state} job(s){cut}   s: state  /: field"
        )
        self.fill(
            [
                (str(i), (value, f"{n:,}", f"{n / top.sampled:.0%}" if top.sampled else "-"))
                for i, (value, n) in enumerate(top.counts)
            ]
        )
        self.query_one(DataTable).focus()
