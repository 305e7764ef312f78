"""View 3: supervisord's processes on every endpoint, with each one's RSS and CPU from its heartbeat (any host;
psutil for a local process without one) and its RSS over the last hour; restart, stop, start, log tail."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from pool.monitor.actions import ProcessVerb
from pool.monitor.memory import beat_of
from pool.monitor.snapshot import Snapshot
from pool.monitor.supervisor_source import endpoint_label
from tui.format import age, spark_level
from tui.screens.base import Base
from tui.screens.modals import ConfirmScreen

SPARK_WIDTH = 12
"""Cells of the RSS sparkline: one per 5 minutes of the last hour."""


class ProcessesScreen(Base):
    BINDINGS = [
        Binding("escape", "app.show_view('queues')", "back"),
        Binding("s", "control('restart')", "restart"),
        Binding("x", "control('stop')", "stop"),
        Binding("a", "control('start')", "start"),
        Binding("S", "rolling", "rolling restart"),
        Binding("l", "tail", "log tail"),
    ]
    COLUMNS = (
        "process",
        "state",
        "pid",
        "uptime",
        "restarts",
        "exit",
        "rss MiB",
        "rss 60m",
        "cpu %",
        "endpoint",
        "note",
    )
    pending_group: str | None = None
    """A program whose first process the cursor goes to once processes are read (enter on a finding)."""

    def body(self) -> ComposeResult:
        table: DataTable[Any] = DataTable(id="processes", cursor_type="row", zebra_stripes=True)
        table.add_columns(*self.COLUMNS)
        yield table
        yield Static("", id="tail")

    def render_snapshot(self, snapshot: Snapshot) -> None:
        super().render_snapshot(snapshot)
        app = self.matop
        processes = app.state.processes
        beats = {p: beat_of(p, snapshot.workers) for p in processes}
        # Redis down: the beats are the last known ones, their RSS and CPU as old as they are; a process on this
        # host is measured now instead (psutil), one elsewhere shows none rather than a stale figure as current
        stale = snapshot.known_at is not None
        usage = app.source.local_usage([p.pid for p, b in beats.items() if p.pid and (b is None or stale)])
        rows = []
        for p in processes:
            beat = beats[p]
            rss, cpu = usage.get(p.pid, (None, None))
            trail = ""
            if beat is not None:
                if not stale:
                    rss, cpu = (beat.rss / 2**20 if beat.rss else None), beat.cpu
                series = app.history.memory.of(beat)
                trail = spark_level(series.trail(snapshot.taken_at, SPARK_WIDTH)) if series else ""
            rows.append(
                (
                    f"{p.endpoint}|{p.full_name}",
                    (
                        p.full_name,
                        p.state,
                        p.pid or "-",
                        age(p.uptime_s) if p.uptime_s else "-",
                        app.state.restarts.get((p.endpoint, p.full_name), 0),
                        p.exitstatus if p.state != "RUNNING" else "-",
                        f"{rss:.0f}" if rss is not None else "-",
                        trail,
                        f"{cpu:.0f}" if cpu is not None else "-",
                        endpoint_label(p.endpoint),
                        (p.spawnerr or p.description)[:40],
                    ),
                )
            )
        self.fill(rows)
        if self.pending_group is not None and processes:
            self._select_group(self.pending_group)
            self.pending_group = None

    def _select_group(self, group: str) -> None:
        first = next((i for i, p in enumerate(self.matop.state.processes) if p.group == group), None)
        if first is None:
            self.app.notify(f"no process of program {group} on any supervisord read")
        else:
            self.query_one(DataTable).move_cursor(row=first)

    def selected(self) -> tuple[str, str] | None:
        key = self.selected_key()
        if key is None:
            return None
        endpoint, _, name = key.partition("|")
        return endpoint, name

    async def action_control(self, verb: ProcessVerb) -> None:
        app = self.matop
        if (picked := self.selected()) is None or not app.allowed(f"{verb} process"):
            return
        endpoint, name = picked
        try:
            await app.source.control_process(endpoint, name, verb)
            outcome = "ok"
        except RuntimeError as error:
            outcome = str(error)
        await app.source.journal(f"{verb} process", f"{endpoint_label(endpoint)} {name}", outcome=outcome)
        app.notify_action(f"{verb} {name}: {outcome}")
        await app.refresh_now()

    def action_rolling(self) -> None:
        """Restart every process of the selected program, one at a time, each back to RUNNING first."""
        app = self.matop
        if (picked := self.selected()) is None or not app.allowed("rolling restart"):
            return
        endpoint, name = picked
        group = name.split(":")[0]
        names = [p.full_name for p in app.state.processes if p.endpoint == endpoint and p.group == group]

        async def decided(yes: bool | None) -> None:
            if not yes:
                return
            try:
                done = await app.source.rolling_restart(endpoint, names)
                outcome = f"{len(done)} restarted"
            except RuntimeError as error:
                outcome = str(error)
            await app.source.journal(
                "rolling restart", f"{endpoint_label(endpoint)} {group}", outcome=outcome
            )
            app.notify_action(f"rolling restart {group}: {outcome}")
            await app.refresh_processes()

        self.app.push_screen(
            ConfirmScreen(f"rolling restart of {group} ({len(names)} process(es)), one at a time?"), decided
        )

    async def action_tail(self) -> None:
        if (picked := self.selected()) is None:
            return
        endpoint, name = picked
        text = await self.matop.source.tail_log(endpoint, name)
        self.query_one("#tail", Static).update("\n".join(text.splitlines()[-12:]))
