"""One job (`enter` on a job): data with secrets masked, options, attempts, reason, trace, logs, holder; and,
for a job in a BullMQ flow, its parent (`u` opens it) and its children by group (`c`, then `enter` opens one),
with what holds a parent in waiting-children said plainly."""

from __future__ import annotations

import json
import time
from typing import Any

from rich.markup import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from pool.monitor.flows import GROUP_TITLES, GROUPS, Flow, FlowJob
from pool.monitor.snapshot import Snapshot
from tui.screens.base import Base

RELOAD_S = 5.0
"""How often an open job detail reads the job and its flow again (off the refresh path: a worker)."""


class JobScreen(Base):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "back"),
        Binding("u", "parent", "open parent"),
        Binding("c", "children", "children"),
        Binding("enter", "open_child", "open child", show=False),
    ]
    DEFAULT_CSS = """
    JobScreen #flow { height: auto; max-height: 9; padding: 0 1; border-top: solid $primary; display: none; }
    """

    def __init__(self, queue: str, job_id: str) -> None:
        super().__init__()
        self.queue, self.job_id = queue, job_id
        self.flow: Flow | None = None
        self.loaded_at = 0.0
        """When the detail and flow were last asked for (monotonic; 0: not yet)."""
        self.read_at = ""
        """The clock time of the last detail read (empty: none yet)."""
        self.child_rows: dict[str, FlowJob] = {}
        """Row key of the children table -> the child it opens (rows that say a group was cut open none)."""

    def body(self) -> ComposeResult:
        yield Static("", id="flow")
        table: DataTable[Any] = DataTable(id="children", cursor_type="row", zebra_stripes=True)
        table.styles.height, table.styles.max_height = "auto", 12  # not app.tcss' 1fr: the detail comes next
        table.display = False
        table.add_columns("child of this job", "queue", "id", "name", "state", "reason")
        yield table
        with VerticalScroll():
            yield Static("loading…", id="job")

    async def on_mount(self) -> None:  # type: ignore[override]  # Textual awaits an async handler
        await self.load()

    def on_screen_resume(self) -> None:
        """Back from a child, a parent or the help: read again (the child may have been requeued meanwhile)."""
        if self.loaded_at:
            self.reload()

    def render_snapshot(self, snapshot: Snapshot) -> None:
        super().render_snapshot(snapshot)
        if self.loaded_at and time.monotonic() - self.loaded_at >= RELOAD_S:
            self.reload()  # what the flow says stays true while the screen is open

    def reload(self) -> None:
        self.loaded_at = time.monotonic()
        self.run_worker(self.load(), exclusive=True, group="job", exit_on_error=False)

    async def load(self) -> None:
        self.loaded_at = time.monotonic()
        app = self.matop
        try:
            detail = await app.source.job_detail(self.queue, self.job_id)
        except Exception as error:  # noqa: BLE001 - a dashboard does not die of a flaky source; it says so
            said = f"{type(error).__name__}: {error}"
            if self.read_at:  # what is on screen stays, with its age
                self.show_flow(self.flow, f"not read again: {said}; shown as read at {self.read_at}")
            else:
                self.query_one("#job", Static).update(Text(f"job {self.job_id} not read: {said}"))
            return
        if detail is None:
            text = f"job {self.job_id} is gone (removed by retention?)"
            self.show_flow(None)
        else:
            snapshot = app.state.snapshot
            holder = next(
                (
                    f"{w.process or w.pid}@{w.host}"
                    for w in (snapshot.workers if snapshot else ())
                    if self.job_id in w.in_flight
                ),
                "-",
            )
            stack = "\n".join(detail.pop("stacktrace") or [])
            text = "\n".join(
                [
                    f"[b]{self.queue} {detail['name']}#{self.job_id}[/b]  state {detail['state']}  "
                    f"held by {holder}",
                    escape(
                        f"job id {self.job_id}  dedup id {detail.get('dedupId') or '-'}  "
                        f"idempotency key {detail.get('idempotencyKey') or '-'}"
                    ),
                    json.dumps(detail, indent=2, default=str),
                    stack,
                ]
            )
        self.query_one("#job", Static).update(text)
        read_at = f"{app.now():%H:%M:%S}"
        if detail is not None:
            try:
                self.show_flow(await app.source.flow(self.queue, self.job_id))
            except Exception as error:  # noqa: BLE001 - the detail above stands; the flow part says why not
                since = f"; shown as read at {self.read_at}" if self.flow is not None else ""
                self.show_flow(self.flow, f"flow not read: {type(error).__name__}: {error}{since}")
        self.read_at = read_at

    def show_flow(self, flow: Flow | None, note: str = "") -> None:
        """The flow panel and the children table; `note`: why what is shown is not fresh (in red, first)."""
        self.flow = flow
        panel = self.query_one("#flow", Static)
        table: DataTable[Any] = self.query_one("#children", DataTable)
        in_flow = flow is not None and (flow.parent is not None or flow.children > 0)
        panel.display = in_flow or bool(note)
        lines = ([(note, True)] if note else []) + (flow.lines() if flow is not None else [])
        text = Text()  # plain text (reasons and ids are never read as markup); what is stuck in red
        for i, (line, alarm) in enumerate(lines):
            text.append(("\n" if i else "") + line, style="bold red" if alarm else "")
        panel.update(text)
        panel.border_title = Text(f"flow of {self.queue}#{self.job_id}")  # Text: an id is never markup
        first = not self.child_rows
        row = table.cursor_row
        self.child_rows = {}
        table.clear()
        if flow is None or not flow.children:
            table.display = False
            return
        for group in GROUPS:
            children = flow.group(group)
            for child in children.jobs:
                key = f"{len(self.child_rows)}"
                self.child_rows[key] = child
                cells = (
                    GROUP_TITLES[group],
                    child.queue,
                    child.id,
                    child.name,
                    child.state,
                    child.reason[:80],
                )
                table.add_row(*(Text(str(c)) for c in cells), key=key)
            if children.unlisted:
                more = f"… {children.unlisted} more not listed"
                table.add_row(GROUP_TITLES[group], "", "", more, "", "", key=f"more-{group}")
        table.display = True
        table.move_cursor(row=min(row, table.row_count - 1))  # a reload keeps the cursor where it was
        if first:
            table.focus()

    def action_parent(self) -> None:
        if self.flow is None or self.flow.parent is None:
            self.matop.notify_action(f"{self.queue}#{self.job_id} has no parent")
            return
        self.app.push_screen(JobScreen(self.flow.parent.queue, self.flow.parent.id))

    def action_children(self) -> None:
        table = self.query_one("#children", DataTable)
        if table.display and table.row_count:
            table.focus()
        else:
            self.matop.notify_action(f"{self.queue}#{self.job_id} has no children")

    def action_open_child(self) -> None:
        table = self.query_one("#children", DataTable)
        if not table.display or not table.row_count:
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        child = self.child_rows.get(str(key))
        if child is not None:
            self.app.push_screen(JobScreen(child.queue, child.id))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:  # enter on the children
        event.stop()
        self.action_open_child()
