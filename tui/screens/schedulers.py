"""View 7: every job scheduler of every queue (the queue table's and any a producer added): what it makes, when,
its next run (in, or MISSED by), and its last run's job and outcome; enter opens that job, `n` the next run's."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from pool.contracts import scheduler_job_id
from pool.monitor.schedulers import Run, Scheduler
from pool.monitor.snapshot import Snapshot
from tui.format import age, when
from tui.screens.base import Base
from tui.screens.job_detail import JobScreen

OUTCOME_STYLE = {"failed": "red", "gone": "yellow", "active": "cyan", "completed": "green"}
HINT = (
    "enter: the last run's job   n: the next run's job   /: filter   "
    "MISSED: the next run is overdue by more than one interval (no worker took it)"
)


def next_cell(s: Scheduler) -> str:
    """`in 4m 14:05:00`, `due 3s ago` (a worker takes it now), or `MISSED by 12m` in red."""
    late_s = s.late_ms / 1000
    if s.missed:
        return f"[b red]MISSED by {age(late_s)}[/b red] {when(s.next_ms)}"
    if late_s > 0:
        return f"due {age(late_s)} ago"
    return f"in {age((s.next_ms - s.seen_at_ms) / 1000)} {when(s.next_ms)}"


def last_cell(s: Scheduler) -> str:
    """The last run's outcome and its time (finished, started, or due): `failed 10:55:42`, `not yet`."""
    if s.last_run is None:
        return "not yet" if s.iterations <= 1 else "…"
    run = s.last_run
    style = OUTCOME_STYLE.get(run.outcome)
    outcome = f"[{style}]{run.outcome}[/{style}]" if style else run.outcome
    return f"{outcome} {when(run.at_ms)}" if run.at_ms else outcome


def _job_id(run: Run | None) -> str:
    return run.job_id if run is not None and run.job_id else "-"


class SchedulersScreen(Base):
    filterable = True
    BINDINGS = [
        Binding("escape", "app.show_view('queues')", "back"),
        Binding("enter", "open_last", "last run's job", show=True),
        Binding("n", "open_next", "next run's job"),
        Binding("slash", "filter", "filter"),
    ]
    COLUMNS = ("queue", "scheduler", "job name", "schedule", "next run", "last run", "last run's job")

    def __init__(self) -> None:
        super().__init__()
        self.shown: dict[str, Scheduler] = {}

    def body(self) -> ComposeResult:
        table: DataTable[Any] = DataTable(id="schedulers", cursor_type="row", zebra_stripes=True)
        table.add_columns(*self.COLUMNS)
        yield table
        yield Static(HINT, id="schedulers-hint")

    def render_snapshot(self, snapshot: Snapshot) -> None:
        super().render_snapshot(snapshot)
        shown = [s for s in snapshot.schedulers if self.matches(s.queue, s.id, s.job_name, s.schedule)]
        self.shown = {f"{s.queue}\n{s.id}": s for s in shown}
        self.fill(
            [
                (
                    key,
                    (
                        s.queue,
                        s.id,
                        s.job_name or "-",
                        s.schedule,
                        next_cell(s),
                        last_cell(s),
                        _job_id(s.last_run),
                    ),
                )
                for key, s in self.shown.items()
            ]
        )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:  # enter on the table
        event.stop()
        self.action_open_last()

    def _selected(self) -> Scheduler | None:
        key = self.selected_key()
        return self.shown.get(key) if key is not None else None

    def action_open_last(self) -> None:
        if (s := self._selected()) is None:
            return
        if s.last_run is None or not s.last_run.job_id:
            why = (
                "has not run yet" if s.last_run is None else "has no job of its recent runs left (retention)"
            )
            self.app.notify(f"scheduler {s.id} {why}")
            return
        self.app.push_screen(JobScreen(s.queue, s.last_run.job_id))

    def action_open_next(self) -> None:
        if (s := self._selected()) is not None:
            self.app.push_screen(JobScreen(s.queue, scheduler_job_id(s.id, s.next_ms)))
