"""The last few events under the findings on the first screen, coalesced as in the events view, newest first:
enough to see an outage or a throttling storm start without leaving the queues (`2` shows them all)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.markup import escape

from pool.monitor.events import EventRow
from tui.format import when
from tui.format_events import times, total

SHOWN = 4


def recent_events(rows: Sequence[EventRow], shown: int = SHOWN) -> str:
    """Markup for the strip: one line per coalesced row (`TopState.event_rows()`), the most recent first."""
    newest = sorted(rows, key=lambda r: r.last_ms, reverse=True)[:shown]
    if not newest:
        return "[dim]no events[/dim]"
    return "\n".join(_line(r) for r in newest)


def _line(r: EventRow) -> str:
    counted = times(r) + (f" ({total(r)})" if total(r) else "")
    return (
        f"{when(r.last_ms)} {escape(f'{r.kind:<16}')} {escape(f'{r.queue:<22}')} "
        f"{escape(r.message[:70])}{f' [b]{escape(counted)}[/b]' if counted else ''}"
    )
