"""Search a queue's jobs with a filter expression (`/` in a queue's job list) and act on the whole match set.

The scan runs in a Textual worker, off the refresh path, with a progress line; `esc` cancels it (and then leaves).
The result says how many jobs were scanned and matched and whether the cap cut it short. `R` / `P` / `X` act on
exactly the ids matched (requeue failed, promote delayed, remove any state but active) after a preview.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Input, Static
from textual.worker import Worker, WorkerState

from pool.monitor.bulk_actions import Action
from pool.monitor.filters import FilterError
from pool.monitor.queries import BROWSABLE_STATES
from pool.monitor.search import SearchProgress, SearchResult, preview
from pool.monitor.snapshot import Snapshot
from tui.format import when
from tui.screens.base import Base
from tui.screens.job_detail import JobScreen
from tui.screens.modals import ConfirmScreen

SHOWN = 500
"""Matches listed in the table (the action still takes every match)."""
SCAN_STATES = tuple(BROWSABLE_STATES)
ACTIONS = {
    "requeue": ("failed",),
    "promote": ("delayed",),
    "remove": tuple(s for s in SCAN_STATES if s != "active"),
}
"""Action -> the states whose matches it takes (the others in the match set are left alone, and said so)."""


class SearchScreen(Base):
    BINDINGS = [
        Binding("escape", "back", "cancel / back"),
        Binding("slash", "edit", "edit filter"),
        Binding("a", "all_states", "all states"),
        Binding("enter", "open", "job detail", show=False),
        Binding("R", "act('requeue')", "requeue matches"),
        Binding("P", "act('promote')", "promote matches"),
        Binding("X", "act('remove')", "remove matches"),
    ]

    def __init__(self, queue: str, state: str, expression: str = "") -> None:
        super().__init__()
        self.queue = queue
        self.state = state
        self.states: tuple[str, ...] = (state,)
        self.expression = expression
        self.result: SearchResult | None = None
        self.scan: Worker[SearchResult] | None = None
        self.acting = False

    def body(self) -> ComposeResult:
        yield Static("", id="title")
        yield Input(
            self.expression,
            placeholder="name=invoice.generate data.organizationId=org_acme reason~timeout attempts>=3 age>10m",
            id="expr",
        )
        yield Static("", id="progress")
        table: DataTable[Any] = DataTable(id="matches", cursor_type="row", zebra_stripes=True)
        table.add_columns("id", "state", "name", "added", "tries", "reason")
        yield table

    def on_mount(self) -> None:  # Base.on_mount runs after this one (Textual calls each class's handler)
        self._title()
        self.call_after_refresh(self.query_one("#expr", Input).focus)  # after the base focused the table

    def render_snapshot(self, snapshot: Snapshot) -> None:
        super().render_snapshot(snapshot)  # the status line only: a search is read once, not per tick

    def _title(self) -> None:
        other = "the state shown" if self.states != (self.state,) else "all states"
        self.query_one("#title", Static).update(
            f"[b]search {self.queue}[/b]  in {', '.join(self.states)}   (a: {other})"
        )

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        event.prevent_default()  # the base's `/` row filter is not this screen's  # the base's `/` row filter is not this screen's

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        event.prevent_default()
        self.expression = event.value.strip()
        self.start()

    def start(self) -> None:
        if self.scan is not None and self.scan.is_running:
            self.scan.cancel()
        self.result = None
        self.query_one(DataTable).clear()
        self._progress(f"scanning {', '.join(self.states)} of {self.queue} …  esc cancels")
        self.scan = self.run_worker(self._search(), exclusive=True, group="search", exit_on_error=False)

    async def _search(self) -> SearchResult:
        return await self.matop.source.search(
            self.queue, list(self.states), self.expression, self.matop.search_cap, self._on_progress
        )

    def _on_progress(self, p: SearchProgress) -> None:
        self._progress(
            f"scanning {p.state}: {p.scanned:,} of {p.total_in_state:,} scanned, {p.matched:,} matched …"
            "  esc cancels"
        )

    def _progress(self, text: str) -> None:
        if self.is_mounted:
            self.query_one("#progress", Static).update(text)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self.scan:
            return
        if event.state == WorkerState.SUCCESS and isinstance(event.worker.result, SearchResult):
            self.show(event.worker.result)
        elif event.state == WorkerState.ERROR:
            error = event.worker.error
            text = str(error) if isinstance(error, FilterError) else f"search failed: {error}"
            self._progress(f"[red]{text}[/red]")
            self.query_one("#expr", Input).focus()
        elif event.state == WorkerState.CANCELLED:
            self._progress("search cancelled")

    def show(self, result: SearchResult) -> None:
        self.result = result
        keys = []
        states = {m.state for m in result.matches}
        for verb, takes in ACTIONS.items():
            if states & set(takes):
                keys.append({"requeue": "R requeue", "promote": "P promote", "remove": "X remove"}[verb])
        more = f" (first {SHOWN} listed)" if len(result.matches) > SHOWN else ""
        self._progress(f"{result.summary}{more}   {'  '.join(keys)}")
        self.fill(
            [
                (
                    f"{m.state}:{m.id}",
                    (m.id, m.state, m.name, when(m.timestamp), m.attempts_made, m.failed_reason[:80]),
                )
                for m in result.matches[:SHOWN]
            ]
        )
        self.query_one(DataTable).focus()

    def action_back(self) -> None:
        if self.scan is not None and self.scan.is_running:
            self.scan.cancel()
            return
        self.app.pop_screen()

    def action_edit(self) -> None:
        self.query_one("#expr", Input).focus()

    def action_all_states(self) -> None:
        self.states = SCAN_STATES if self.states != SCAN_STATES else (self.state,)
        self._title()
        self.start()

    def action_open(self) -> None:
        if (key := self.selected_key()) is not None:
            self.app.push_screen(JobScreen(self.queue, key.split(":", 1)[1]))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_act(self, verb: str) -> None:
        app = self.matop
        result = self.result
        if result is None or self.acting:
            return
        if verb not in ACTIONS:
            return
        action = cast(Action, verb)
        takes = ACTIONS[action]
        chosen = [m for m in result.matches if m.state in takes]
        if not chosen:
            app.notify_action(f"{verb}: no {' or '.join(takes)} job among the matches")
            return
        if not app.allowed(f"{verb} matches"):
            return
        ids = [m.id for m in chosen]  # exactly the ids matched when the key was pressed
        left = len(result.matches) - len(chosen)
        question = "\n".join(
            [
                f"{verb} {len(ids):,} job(s) of {self.queue} matching `{result.expression or '(all)'}`?",
                *preview(replace(result, matches=tuple(chosen))).lines()[1:],
                f"{left:,} other match(es) not in {' / '.join(takes)} are left alone" if left else "",
            ]
        ).strip()

        async def decided(yes: bool | None) -> None:
            if not yes:
                return
            self.acting = True
            try:
                outcome = await app.source.act(
                    self.queue,
                    action,
                    ids,
                    result.expression,
                    lambda done, total: self._progress(f"{verb}: {done:,} of {total:,} …"),
                )
            finally:
                self.acting = False
            app.notify_action(f"{verb}: {outcome.done:,} job(s), {outcome.skipped:,} skipped (journaled)")
            self.start()  # the match set after the action, read again

        self.app.push_screen(ConfirmScreen(question), decided)
