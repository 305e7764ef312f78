"""What every ma-top view shares: header, status line, optional `/` filter, footer, a table kept in place."""

from __future__ import annotations

from typing import Any, cast

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from pool.monitor.snapshot import Snapshot
from tui.dashboard import Dashboard
from tui.format import last_known, procs_summary


class Base(Screen[None]):
    filter_text = ""
    filterable = False
    """Screens with a `/` filter get the (hidden until asked for) filter box."""
    pending_filter: str | None = None
    """A filter to set on the next render (enter on a finding that points at filtered rows)."""

    @property
    def matop(self) -> Dashboard:
        """The app, typed: its data source, state, thresholds and the read-only gate."""
        return cast(Dashboard, self.app)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="status")
        if self.filterable:
            yield Input(placeholder="filter (enter keeps it, empty clears)", id="filter")
        yield from self.body()
        yield Footer()

    def body(self) -> ComposeResult:
        yield from ()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip().lower()
        if self.matop.state.snapshot is not None:
            self.render_snapshot(self.matop.state.snapshot)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.input.display = bool(event.value.strip())
        self.query_one(DataTable).focus()

    def matches(self, *fields: Any) -> bool:
        """Every word of the filter is in one of `fields` (`stalled identity-events`: kind and queue)."""
        return all(any(word in str(f).lower() for f in fields) for word in self.filter_text.split())

    def set_filter(self, text: str) -> None:
        """Filter as if typed after `/` (the box stays shown, so the filter is seen and `/` edits it)."""
        box = self.query_one("#filter", Input)
        box.value = text
        box.display = bool(text)
        self.filter_text = text.strip().lower()

    def fill(self, rows: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Replace the table's rows, keeping the cursor where it was."""
        table = self.query_one(DataTable)
        row = table.cursor_row
        table.clear()
        for key, cells in rows:
            table.add_row(*cells, key=key)
        if rows:
            table.move_cursor(row=min(row, len(rows) - 1))

    def selected_key(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def on_mount(self) -> None:
        tables = self.query(DataTable)
        if tables:
            tables.first().focus()  # keys go to the table, not the (hidden) filter box
        if self.matop.state.snapshot is not None:
            self.render_snapshot(self.matop.state.snapshot)

    def render_snapshot(self, snapshot: Snapshot) -> None:
        """The status line; each view renders its body after calling this."""
        if self.pending_filter is not None:
            self.set_filter(self.pending_filter)
            self.pending_filter = None
        app = self.matop
        errors = "  ".join(f"[red]{k}: {v}[/red]" for k, v in app.state.all_errors(snapshot).items())
        mode = "[reverse] READ-ONLY [/reverse] " if app.read_only else ""
        redis = "[green]redis up[/green]" if snapshot.redis.up else "[red]REDIS DOWN[/red]"
        procs = procs_summary([p.state for p in app.state.processes])
        if snapshot.known_at is not None:
            redis += f" [red]stale: {last_known(snapshot)}[/red]"
        self.query_one("#status", Static).update(
            f"{mode}{redis}  workers {len(snapshot.workers)}  {procs + '  ' if procs else ''}"
            f"{app.now():%H:%M:%S}  {app.message}  {errors}"
        )
