"""The last few events under the findings on the first screen, coalesced as in the events view, newest first:
enough to see an outage or a throttling storm start without leaving the queues (`2` shows them all)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from pool.monitor.queries import coalesce
from tui.format import when

SHOWN = 4


def recent_events(events: list[dict[str, str]], shown: int = SHOWN) -> str:
    """Markup for the strip: one line per coalesced row, the most recent occurrence first."""
    rows: list[dict[str, Any]] = sorted(coalesce(events), key=lambda e: e["last"], reverse=True)[:shown]
    if not rows:
        return "[dim]no events[/dim]"
    return "\n".join(_line(e) for e in rows)


def _line(e: dict[str, Any]) -> str:
    kind, queue, message = e.get("kind", ""), e.get("queue", ""), e.get("message", "")
    times = f" [b]×{e['count']}[/b]" if e["count"] > 1 else ""
    return (
        f"{when(int(e['last'] * 1000))} {escape(f'{kind:<16}')} {escape(f'{queue:<22}')} "
        f"{escape(message[:70])}{times}"
    )
