"""The findings under the queues table, most severe first: cause, evidence and the key that acts. Focused (`f`
or `tab`), `↑/↓` select one and `enter` goes to its evidence (the screen reads `Finding.goto`).

A Static that takes focus rather than an OptionList: a finding is two lines of markup, and the pane's text stays
readable as one (what the findings tests read)."""

from __future__ import annotations

from rich.markup import escape
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Static

from pool.monitor.findings import Finding

COLORS = {"critical": "red", "warning": "yellow", "info": "cyan"}
SHOWN = 4
"""Findings on screen at a time (two lines each); the pane scrolls with the selection, `ma-top --once` lists all."""


class FindingsPane(Static, can_focus=True):
    BINDINGS = [
        Binding("up,k", "move(-1)", "prev finding", show=False),
        Binding("down,j", "move(1)", "next finding", show=False),
        Binding("home", "move(-1000000)", "first finding", show=False),
        Binding("end", "move(1000000)", "last finding", show=False),
        Binding("enter", "choose", "show evidence"),
    ]

    class Chosen(Message):
        """Enter on a finding: the screen shows its evidence."""

        def __init__(self, finding: Finding) -> None:
            super().__init__()
            self.finding = finding

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.found: list[Finding] = []
        self.cursor = 0

    @property
    def selected(self) -> Finding | None:
        return self.found[self.cursor] if self.found else None

    def show(self, found: list[Finding]) -> None:
        """New findings; the selection stays on the same finding (kind and subject) while it is still there."""
        was = self.selected
        self.found = list(found)
        same = [i for i, f in enumerate(self.found) if was and (f.kind, f.subject) == (was.kind, was.subject)]
        self.cursor = same[0] if same else min(self.cursor, max(0, len(self.found) - 1))
        self._draw()

    def action_move(self, step: int) -> None:
        if self.found:
            self.cursor = max(0, min(len(self.found) - 1, self.cursor + step))
            self._draw()

    def action_choose(self) -> None:
        if (finding := self.selected) is not None:
            self.post_message(self.Chosen(finding))

    def watch_has_focus(self, has_focus: bool) -> None:
        super().watch_has_focus(has_focus)  # the :focus style
        self._draw()  # the selection shows while the pane has the keys

    def _draw(self) -> None:
        self.update(pane_text(self.found, self.cursor if self.has_focus else None))


def pane_text(found: list[Finding], cursor: int | None) -> str:
    """The pane's markup: a window of SHOWN findings that holds the cursor (None: no selection shown, the top)."""
    if not found:
        return "[green]no findings[/green]"
    start = 0 if cursor is None else max(0, cursor - SHOWN + 1)
    lines = [f"[dim]… {start} more above[/dim]"] if start else []
    for i, f in enumerate(found[start : start + SHOWN], start):
        color = COLORS[f.severity]
        line = f"[{color}]{f.severity.upper():8}[/{color}] [b]{escape(f.subject)}[/b]: {escape(f.cause)}"
        lines.append(f"[reverse]▶{line}[/reverse]" if i == cursor else f" {line}")
        lines.append(f"{'':10}[dim]{escape(f.evidence)} → {escape(f.action)}[/dim]")
    if (below := len(found) - start - SHOWN) > 0:
        lines.append(f"[dim]… {below} more below (f or tab, then ↓; ma-top --once lists them all)[/dim]")
    return "\n".join(lines)
