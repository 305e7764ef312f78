"""The modal screens: a yes/no confirmation (every bulk action asks first) and the key help."""

from __future__ import annotations

from typing import cast

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from pool.contracts import AUDIT_STREAM
from pool.monitor.findings import Thresholds
from tui.dashboard import Dashboard

HELP = """[b]ma-top[/b] — keys
1 queues  2 events  3 processes  4 redis  5 failures  6 bulk jobs  7 schedulers
?  help   q  quit   enter  drill in   esc  back   /  filter the rows shown
W  write an incident report of the last 2 h (var/incident-<UTC time>.md)
first screen:  f or tab  the findings (most severe first), ↑/↓ select,
   enter its evidence, esc back to the table;  space  pause/resume the queue
queue view:  ←/→ state   n/p page   g/G first/last page   r requeue job
   R requeue shown failed   P promote shown delayed
   /  search: name=… data.org=… reason~timeout attempts>=3 age>10m; in the
      result a all states, R/P/X requeue/promote/remove every match
      (preview first), esc cancels a running scan
   t  who floods it: the top values of a payload field, waiting jobs
job detail:  u its parent   c its children (enter opens one); a parent says
   which failed children hold it in waiting-children
processes:   s restart   x stop   a start   S rolling restart   l log tail
failures:    R requeue the selected group (the ids shown)
schedulers:  enter the last run's job   n the next run's job
   MISSED: the next run overdue by more than one interval
"""


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [Binding("y", "answer(True)", "yes"), Binding("n,escape", "answer(False)", "no")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm"):
            yield Static(self.question, id="question")
            yield Static("[b]y[/b] confirm    [b]n[/b]/esc cancel")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "close")]

    def compose(self) -> ComposeResult:
        app = cast(Dashboard, self.app)
        lines = [
            HELP,
            "read-only: every action is refused"
            if app.read_only
            else f"actions are journaled to {AUDIT_STREAM}",
            _thresholds(app.thresholds),
        ]
        if app.grafana_url:
            lines.append(f"Grafana: {app.grafana_url}")
        with VerticalScroll(id="help-box"):  # a short terminal scrolls it rather than cutting it off
            yield Static("\n".join(lines), id="help")


def _thresholds(t: Thresholds) -> str:
    return (
        f"findings: billing-usage backlog > {t.billing_usage_backlog}, per minute over the last "
        f"{t.rate_window_s / 60:g} min: retries > {t.retries_per_min:g}, stalls > {t.stalled_per_min:g}, "
        f"identity 429s > {t.throttled_per_min:g}; Redis memory > {t.redis_memory_pct:g}% of maxmemory; "
        "waiting with no workers, no handler, paused, rate limited, eviction policy"
    )
