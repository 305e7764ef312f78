"""Enter on a finding: the view that shows its evidence, with the cursor or filter on it. `Finding.goto` says
where (pool/monitor/findings.py): `queue:<name>`, `process:<group>`, `events:<filter>`, `failures:<queue>`,
`redis`, `bulk`, `job:<queue>:<id>`; an empty goto is the subject's row on the first screen (the caller's)."""

from __future__ import annotations

from tui.dashboard import Dashboard
from tui.screens.base import Base
from tui.screens.failures import FailuresScreen
from tui.screens.job_detail import JobScreen
from tui.screens.processes import ProcessesScreen
from tui.screens.queue_jobs import QueueScreen

VIEWS = {"process": "processes", "events": "events", "failures": "failures", "redis": "redis", "bulk": "bulk"}
VIEWS["schedulers"] = "schedulers"  # every job scheduler (scheduler-missed)
"""A goto's view -> the app's mode (tui/app.py's MODES) that shows it."""


def open_queue(app: Dashboard, name: str) -> None:
    """A queue's jobs: its failed ones if it has any, else its waiting ones (its flow parents waiting for
    their children when that is all it holds)."""
    stats = app.state.snapshot.queue(name) if app.state.snapshot else None
    counts = stats.counts if stats else {}
    if counts.get("failed"):
        state = "failed"
    elif counts.get("waiting-children") and not counts.get("waiting"):
        state = "waiting-children"
    else:
        state = "waiting"
    app.push_screen(QueueScreen(name, state))


async def show_evidence(app: Dashboard, goto: str) -> bool:
    """Go where `goto` points; False for an empty or unknown goto (the caller shows the subject's row)."""
    view, _, target = goto.partition(":")
    if view == "queue" and target:
        open_queue(app, target)
        return True
    if view == "job" and target:
        queue, _, job_id = target.partition(":")
        app.push_screen(JobScreen(queue, job_id))
        return True
    if view not in VIEWS:
        return False
    mode = VIEWS[view]
    mounted = app.switch_mode(mode)
    screen = app.get_screen_stack(mode)[0]  # exists now, mounted (and rendered) once awaited
    if isinstance(screen, ProcessesScreen):
        screen.pending_group = target
    elif isinstance(screen, FailuresScreen):
        screen.pending_queue, screen.loaded_at = target, 0.0  # read the groups now, not on the 5 s timer
    elif isinstance(screen, Base) and screen.filterable:
        screen.pending_filter = target
    await mounted
    app.render_screen()
    return True
