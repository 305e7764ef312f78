"""One job (`enter` on a job): data with secrets masked, options, attempts, reason, trace, logs, holder; and,
for a job in a BullMQ flow, its parent (`u` opens it) and its children by group (`c`, then `enter` opens one),
with what holds a parent in waiting-children said plainly."""

from __future__ import annotations

import json
from typing import Any

from rich.markup import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from pool.monitor.flows import GROUP_TITLES, GROUPS, Flow, FlowJob
from tui.screens.base import Base


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
        app = self.matop
        detail = await app.source.job_detail(self.queue, self.job_id)
        if detail is None:
            text = f"job {self.job_id} is gone (removed by retention?)"
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
        if detail is not None:
            try:
                self.show_flow(await app.source.flow(self.queue, self.job_id))
            except Exception as error:  # noqa: BLE001 - the detail above stands; the flow part says why not
                self.show_flow(None, f"flow not read: {type(error).__name__}: {error}")

    def show_flow(self, flow: Flow | None, error: str = "") -> None:
        self.flow = flow
        panel = self.query_one("#flow", Static)
        table: DataTable[Any] = self.query_one("#children", DataTable)
        in_flow = flow is not None and (flow.parent is not None or flow.children > 0)
        panel.display = in_flow or bool(error)
        lines = [(error, True)] if error else flow.lines() if flow is not None else []
        text = Text()  # plain text (reasons and ids are never read as markup); what is stuck in red
        for i, (line, alarm) in enumerate(lines):
            text.append(("\n" if i else "") + line, style="bold red" if alarm else "")
        panel.update(text)
        panel.border_title = Text(f"flow of {self.queue}#{self.job_id}")  # Text: an id is never markup
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
