"""One job (`enter` on a job): data with secrets masked, options, attempts, reason, trace, logs, holder."""

from __future__ import annotations

import json

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from tui.screens.base import Base


class JobScreen(Base):
    BINDINGS = [Binding("escape", "app.pop_screen", "back")]

    def __init__(self, queue: str, job_id: str) -> None:
        super().__init__()
        self.queue, self.job_id = queue, job_id

    def body(self) -> ComposeResult:
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
