"""A queue's jobs by state (`enter` on a queue): a page at a time, newest first; requeue and promote."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from pool.monitor.queries import BROWSABLE_STATES, PAGE, JobRow, is_overdue
from pool.monitor.snapshot import Snapshot
from tui.format import age, when
from tui.screens.base import Base
from tui.screens.job_detail import JobScreen
from tui.screens.modals import ConfirmScreen
from tui.screens.search import SearchScreen
from tui.screens.top_values import TopValuesScreen

BulkAction = Callable[[str, list[str]], Awaitable[tuple[int, int]]]


class QueueScreen(Base):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "back"),
        Binding("right,l", "state(1)", "next state", priority=True),
        Binding("left,h", "state(-1)", "prev state", priority=True),
        Binding("n", "page(1)", "next page"),
        Binding("p", "page(-1)", "prev page"),
        Binding("g", "page(-1000000000)", "first page", show=False),
        Binding("G", "page(1000000000)", "last page", show=False),
        Binding("enter", "open", "job detail"),
        Binding("r", "requeue_one", "requeue"),
        Binding("R", "requeue_shown", "requeue shown"),
        Binding("P", "promote_shown", "promote shown"),
        Binding("slash", "search", "search"),
        Binding("t", "top_values", "who floods it"),
    ]
    STATES = list(BROWSABLE_STATES)

    def __init__(self, queue: str, state: str = "failed") -> None:
        super().__init__()
        self.queue = queue
        self.state = state
        self.page = 0
        self.total = 0
        self.shown: list[JobRow] = []

    def body(self) -> ComposeResult:
        yield Static("", id="title")
        table: DataTable[Any] = DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
        table.add_columns("id", "name", "added", "tries", "finished", "reason")
        yield table

    def render_snapshot(self, snapshot: Snapshot) -> None:
        super().render_snapshot(snapshot)
        self.reload()

    def reload(self) -> None:
        self.run_worker(self.load(), exclusive=True, group="jobs", exit_on_error=False)

    async def load(self) -> None:
        source = self.matop.source
        shown, total = await source.jobs_page(self.queue, self.state, self.page)
        typical = await source.typical_duration_ms(self.queue) if self.state == "active" else None
        if not self.is_mounted or self.app.screen is not self:  # left (or covered) while the page was loading
            return
        self.shown, self.total = shown, total
        now_ms = time.time() * 1000
        pages = max(1, -(-self.total // PAGE))
        tabs = " ".join(f"[reverse]{s}[/reverse]" if s == self.state else s for s in self.STATES)
        self.query_one("#title", Static).update(
            f"[b]{self.queue}[/b]  {tabs}   page {self.page + 1}/{pages} ({self.total} jobs)"
        )

        def note(job: JobRow) -> str:
            if self.state == "active" and is_overdue(job.processed_on, now_ms, typical):
                usual = f", usual {typical / 1000:.1f}s" if typical else ""
                return f"[b red]LONG-RUNNING[/b red] {age((now_ms - job.processed_on) / 1000)}{usual}"
            if job.pending_children is not None:  # a flow parent: enter says which children hold it
                return f"waiting for {job.pending_children} child job(s) (enter: which)"
            return job.failed_reason[:80]

        self.fill(
            [
                (
                    job.id,
                    (
                        job.id,
                        job.name,
                        when(job.timestamp),
                        job.attempts_made,
                        when(job.finished_on),
                        note(job),
                    ),
                )
                for job in self.shown
            ]
        )

    def action_state(self, step: int) -> None:
        self.state = self.STATES[(self.STATES.index(self.state) + step) % len(self.STATES)]
        self.page = 0
        self.reload()

    def action_page(self, step: int) -> None:
        last = max(0, -(-self.total // PAGE) - 1)
        self.page = min(last, max(0, self.page + step))
        self.reload()

    def action_open(self) -> None:
        if (job_id := self.selected_key()) is not None:
            self.app.push_screen(JobScreen(self.queue, job_id))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:  # enter on the table
        event.stop()
        self.action_open()

    async def action_requeue_one(self) -> None:
        app = self.matop
        if self.state != "failed" or (job_id := self.selected_key()) is None or not app.allowed("requeue"):
            return
        done, _ = await app.source.requeue(self.queue, [job_id])
        await app.source.journal("requeue", self.queue, [job_id], f"{done} requeued")
        app.notify_action(f"requeued {job_id}" if done else f"{job_id} is no longer failed")
        await self.load()

    def _confirm_shown(self, verb: str, act: BulkAction) -> None:
        app = self.matop
        ids = [j.id for j in self.shown]  # exactly the ids on screen when the key was pressed
        if not ids or not app.allowed(verb):
            return
        names = sorted({j.name for j in self.shown})
        oldest, newest = min(j.timestamp for j in self.shown), max(j.timestamp for j in self.shown)
        question = (
            f"{verb} {len(ids)} {self.state} job(s) shown on {self.queue}?\n"
            f"names: {', '.join(names)[:200]}\noldest {when(oldest)}  newest {when(newest)}"
        )

        async def decided(yes: bool | None) -> None:
            if not yes:
                return
            done, skipped = await act(self.queue, ids)
            await app.source.journal(verb, self.queue, ids, f"{done} done, {skipped} skipped")
            app.notify_action(f"{verb}: {done} job(s), {skipped} skipped")
            await self.load()

        self.app.push_screen(ConfirmScreen(question), decided)

    def action_requeue_shown(self) -> None:
        if self.state == "failed":
            self._confirm_shown("requeue", self.matop.source.requeue)

    def action_promote_shown(self) -> None:
        if self.state == "delayed":
            self._confirm_shown("promote", self.matop.source.promote)

    def action_search(self) -> None:
        self.app.push_screen(SearchScreen(self.queue, self.state))

    def action_top_values(self) -> None:
        self.app.push_screen(TopValuesScreen(self.queue))
