"""ma-top's screens: they only render what the data layer fetched, and turn keys into actions."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from pool.monitor.collector import Snapshot
from pool.monitor.supervisor_source import endpoint_label
from tui import ops

if TYPE_CHECKING:
    from tui.app import MaTop

SPARKS = "▁▁▂▃▄▅▆▇█"


def spark(values: tuple[int, ...], width: int = 12) -> str:
    points = list(reversed(values[:width]))
    top = max(points, default=0) or 1
    return "".join(SPARKS[min(8, round(v / top * 8))] for v in points)


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def drain_eta(q: Any) -> str:
    """Time to empty the backlog at the recent completion rate (last 5 full minutes); ∞ when nothing completes."""
    backlog = q.counts["waiting"] + q.counts["prioritized"]
    if not backlog:
        return "-"
    recent = q.completed_per_min[1:6]
    rate = sum(recent) / len(recent) if recent else 0
    return age(backlog / rate * 60) if rate > 0 else "∞"


def when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%H:%M:%S") if ms else "-"


def alerts(snapshot: Snapshot, q: Any, thresholds: dict[str, int]) -> list[str]:
    found = []
    waiting = q.counts["waiting"] + q.counts["prioritized"]
    if waiting and not q.workers:
        found.append("NO WORKERS")
    if q.name == "billing-usage" and waiting > thresholds["billing_usage_backlog"]:
        found.append("BACKLOG")
    if q.name == "billing-payment-sync" and q.counters.get("retries", 0) > thresholds["payment_sync_retries"]:
        found.append("RETRIES")
    if not q.handled and (q.counts["waiting"] or q.counts["delayed"]):
        found.append("NO HANDLER")
    if q.paused:
        found.append("PAUSED")
    return found


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
        app: MaTop = self.app  # type: ignore[assignment]
        lines = [
            "[b]ma-top[/b] — keys",
            "1 queues   2 events   3 processes   4 redis   5 failures   6 bulk jobs   ? help   q quit",
            "/  filter the queues or events shown (by name, kind, queue or message)",
            "enter  drill into a queue / job     esc  back",
            "queue view:  ←/→ state   n/p page   g/G first/last page   r requeue job   R requeue shown failed",
            "             P promote shown delayed   space pause/resume queue",
            "processes:   s restart   x stop   a start   S rolling restart of the program   l log tail",
            "failures:    R requeue the selected group (the ids shown)",
            "",
            "read-only: every action is refused" if app.read_only else "actions are journaled to ma:audit",
        ]
        lines.append(
            f"alerts: billing-usage backlog > {app.thresholds['billing_usage_backlog']}, payment-sync "
            f"retries > {app.thresholds['payment_sync_retries']}, waiting with no workers, no handler"
        )
        if app.grafana_url:
            lines.append(f"Grafana: {app.grafana_url}")
        yield Static("\n".join(lines), id="help")


class Base(Screen[None]):
    filter_text = ""
    filterable = False
    """Screens with a `/` filter get the (hidden until asked for) filter box."""

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="status")
        if self.filterable:
            yield Input(placeholder="filter (enter keeps it, empty clears)", id="filter")
        yield from self.body()
        yield Footer()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip().lower()
        app: MaTop = self.app  # type: ignore[assignment]
        if app.snapshot is not None:
            self.render_snapshot(app.snapshot)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.input.display = bool(event.value.strip())
        self.query_one(DataTable).focus()

    def matches(self, *fields: Any) -> bool:
        return not self.filter_text or any(self.filter_text in str(f).lower() for f in fields)

    def body(self) -> ComposeResult:
        yield from ()

    def fill(self, rows: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Replace the table's rows, keeping the cursor where it was."""
        table = self.query_one(DataTable)
        row = table.cursor_row
        table.clear()
        for key, cells in rows:
            table.add_row(*cells, key=key)
        if rows:
            table.move_cursor(row=min(row, len(rows) - 1))

    def selected_key(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def on_mount(self) -> None:
        app: MaTop = self.app  # type: ignore[assignment]
        tables = self.query(DataTable)
        if tables:
            tables.first().focus()  # keys go to the table, not the (hidden) filter box
        if app.snapshot is not None:
            self.render_snapshot(app.snapshot)

    def render_snapshot(self, snapshot: Snapshot) -> None:
        app: MaTop = self.app  # type: ignore[assignment]
        errors = "  ".join(
            f"[red]{k}: {v}[/red]" for k, v in {**snapshot.errors, **app.supervisor_errors}.items()
        )
        mode = "[reverse] READ-ONLY [/reverse] " if app.read_only else ""
        redis = "[green]redis up[/green]" if snapshot.redis.up else "[red]REDIS DOWN[/red]"
        self.query_one("#status", Static).update(
            f"{mode}{redis}  workers {len(snapshot.workers)}  {app.now():%H:%M:%S}  {app.message}  {errors}"
        )


class QueuesScreen(Base):
    filterable = True
    BINDINGS = [
        Binding("enter", "open", "open queue", show=True),
        Binding("space", "pause", "pause/resume"),
        Binding("slash", "filter", "filter"),
    ]
    COLUMNS = (
        "queue",
        "wait",
        "active",
        "delayed",
        "prio",
        "failed",
        "done/min",
        "fail/min",
        "oldest",
        "eta",
        "workers",
        "alerts",
    )

    def body(self) -> ComposeResult:
        table = DataTable(id="queues", cursor_type="row", zebra_stripes=True)
        table.add_columns(*self.COLUMNS)
        yield table

    def render_snapshot(self, snapshot: Snapshot) -> None:
        super().render_snapshot(snapshot)
        app: MaTop = self.app  # type: ignore[assignment]
        self.fill(
            [
                (
                    q.name,
                    (
                        q.name,
                        q.counts["waiting"],
                        q.counts["active"],
                        q.counts["delayed"],
                        q.counts["prioritized"],
                        q.counts["failed"],
                        spark(q.completed_per_min),
                        spark(q.failed_per_min),
                        age(q.oldest_waiting_s),
                        drain_eta(q),
                        q.workers,
                        " ".join(alerts(snapshot, q, app.thresholds)),
                    ),
                )
                for q in snapshot.queues
                if self.matches(q.name)
            ]
        )

    def action_open(self) -> None:
        app: MaTop = self.app  # type: ignore[assignment]
        if (name := self.selected_key()) is not None:
            stats = app.snapshot.queue(name) if app.snapshot else None
            self.app.push_screen(
                QueueScreen(name, "failed" if stats and stats.counts["failed"] else "waiting")
            )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:  # enter on the table
        event.stop()
        self.action_open()

    async def action_pause(self) -> None:
        app: MaTop = self.app  # type: ignore[assignment]
        if (name := self.selected_key()) is None or not app.allowed("pause/resume"):
            return
        stats = app.snapshot.queue(name) if app.snapshot else None
        paused = not (stats and stats.paused)
        await ops.set_paused(app.redis, name, paused)
        await app.journal.write("pause" if paused else "resume", name)
        app.notify_action(f"{'paused' if paused else 'resumed'} {name}")
        await app.refresh_now()


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
    ]
    STATES = list(ops.STATE_KEYS)

    def __init__(self, queue: str, state: str = "failed") -> None:
        super().__init__()
        self.queue = queue
        self.state = state
        self.page = 0
        self.total = 0
        self.shown: list[ops.JobRow] = []

    def body(self) -> ComposeResult:
        yield Static("", id="title")
        table = DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
        table.add_columns("id", "name", "added", "tries", "finished", "reason")
        yield table

    def render_snapshot(self, snapshot: Snapshot) -> None:
        super().render_snapshot(snapshot)
        self.run_worker(self.load(), exclusive=True, group="jobs", exit_on_error=False)

    async def load(self) -> None:
        app: MaTop = self.app  # type: ignore[assignment]
        shown, total = await ops.jobs_page(app.redis, self.queue, self.state, self.page)
        typical = await ops.typical_duration_ms(app.redis, self.queue) if self.state == "active" else None
        if not self.is_mounted or app.screen is not self:  # left (or covered) while the page was loading
            return
        self.shown, self.total = shown, total
        now_ms = time.time() * 1000
        pages = max(1, -(-self.total // ops.PAGE))
        tabs = " ".join(f"[reverse]{s}[/reverse]" if s == self.state else s for s in self.STATES)
        self.query_one("#title", Static).update(
            f"[b]{self.queue}[/b]  {tabs}   page {self.page + 1}/{pages} ({self.total} jobs)"
        )

        def note(job: ops.JobRow) -> str:
            if self.state == "active" and ops.is_overdue(job.processed_on, now_ms, typical):
                usual = f", usual {typical / 1000:.1f}s" if typical else ""
                return f"[b red]LONG-RUNNING[/b red] {age((now_ms - job.processed_on) / 1000)}{usual}"
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
        self.run_worker(self.load(), exclusive=True, group="jobs", exit_on_error=False)

    def action_page(self, step: int) -> None:
        last = max(0, -(-self.total // ops.PAGE) - 1)
        self.page = min(last, max(0, self.page + step))
        self.run_worker(self.load(), exclusive=True, group="jobs", exit_on_error=False)

    def action_open(self) -> None:
        if (job_id := self.selected_key()) is not None:
            self.app.push_screen(JobScreen(self.queue, job_id))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:  # enter on the table
        event.stop()
        self.action_open()

    async def action_requeue_one(self) -> None:
        app: MaTop = self.app  # type: ignore[assignment]
        if self.state != "failed" or (job_id := self.selected_key()) is None or not app.allowed("requeue"):
            return
        done, _ = await ops.requeue(app.redis, self.queue, [job_id])
        await app.journal.write("requeue", self.queue, [job_id], f"{done} requeued")
        app.notify_action(f"requeued {job_id}" if done else f"{job_id} is no longer failed")
        await self.load()

    def _confirm_shown(self, verb: str, act: Any) -> None:
        app: MaTop = self.app  # type: ignore[assignment]
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
            done, skipped = await act(app.redis, self.queue, ids)
            await app.journal.write(verb, self.queue, ids, f"{done} done, {skipped} skipped")
            app.notify_action(f"{verb}: {done} job(s), {skipped} skipped")
            await self.load()

        self.app.push_screen(ConfirmScreen(question), decided)

    def action_requeue_shown(self) -> None:
        if self.state == "failed":
            self._confirm_shown("requeue", ops.requeue)

    def action_promote_shown(self) -> None:
        if self.state == "delayed":
            self._confirm_shown("promote", ops.promote)


class JobScreen(Base):
    BINDINGS = [Binding("escape", "app.pop_screen", "back")]

    def __init__(self, queue: str, job_id: str) -> None:
        super().__init__()
        self.queue, self.job_id = queue, job_id

    def body(self) -> ComposeResult:
        with VerticalScroll():
            yield Static("loading…", id="job")

    async def on_mount(self) -> None:
        app: MaTop = self.app  # type: ignore[assignment]
        detail = await ops.job_detail(app.redis, self.queue, self.job_id)
        if detail is None:
            text = f"job {self.job_id} is gone (removed by retention?)"
        else:
            holder = next(
                (
                    f"{w.process or w.pid}@{w.host}"
                    for w in (app.snapshot.workers if app.snapshot else ())
                    if self.job_id in w.in_flight
                ),
                "-",
            )
            stack = "\n".join(detail.pop("stacktrace") or [])
            text = "\n".join(
                [
                    f"[b]{self.queue} {detail['name']}#{self.job_id}[/b]  state {detail['state']}  "
                    f"held by {holder}",
                    json.dumps(detail, indent=2, default=str),
                    stack,
                ]
            )
        self.query_one("#job", Static).update(text)


class EventsScreen(Base):
    filterable = True
    BINDINGS = [Binding("escape", "app.show_view('queues')", "back"), Binding("slash", "filter", "filter")]

    def body(self) -> ComposeResult:
        table = DataTable(id="events", cursor_type="row", zebra_stripes=True)
        table.add_columns("time", "kind", "queue", "×", "message", "where")
        yield table

    def render_snapshot(self, snapshot: Snapshot) -> None:
        super().render_snapshot(snapshot)
        app: MaTop = self.app  # type: ignore[assignment]
        table = self.query_one(DataTable)
        table.clear()
        shown = [
            e
            for e in ops.coalesce(app.events)
            if self.matches(e.get("kind"), e.get("queue"), e.get("message"))
        ]
        for e in reversed(shown[-200:]):
            times = f"×{e['count']} in {e['last'] - e['first']:.0f}s" if e["count"] > 1 else ""
            table.add_row(
                when(int(e["first"] * 1000)),
                e.get("kind", ""),
                e.get("queue", ""),
                times,
                e.get("message", "")[:90],
                f"{e.get('host', '')}:{e.get('pid', '')}",
            )


class ProcessesScreen(Base):
    BINDINGS = [
        Binding("escape", "app.show_view('queues')", "back"),
        Binding("s", "control('restart')", "restart"),
        Binding("x", "control('stop')", "stop"),
        Binding("a", "control('start')", "start"),
        Binding("S", "rolling", "rolling restart"),
        Binding("l", "tail", "log tail"),
    ]

    def body(self) -> ComposeResult:
        table = DataTable(id="processes", cursor_type="row", zebra_stripes=True)
        table.add_columns(
            "process", "state", "pid", "uptime", "restarts", "exit", "rss MiB", "cpu %", "endpoint", "note"
        )
        yield table
        yield Static("", id="tail")

    def render_snapshot(self, snapshot: Snapshot) -> None:
        super().render_snapshot(snapshot)
        app: MaTop = self.app  # type: ignore[assignment]
        usage = ops.local_usage([p.pid for p in app.processes if p.pid])
        rows = []
        for p in app.processes:
            rss, cpu = usage.get(p.pid, (None, None))
            rows.append(
                (
                    f"{p.endpoint}|{p.full_name}",
                    (
                        p.full_name,
                        p.state,
                        p.pid or "-",
                        age(p.uptime_s) if p.uptime_s else "-",
                        app.restarts.get((p.endpoint, p.full_name), 0),
                        p.exitstatus if p.state != "RUNNING" else "-",
                        f"{rss:.0f}" if rss is not None else "-",
                        f"{cpu:.0f}" if cpu is not None else "-",
                        endpoint_label(p.endpoint),
                        (p.spawnerr or p.description)[:40],
                    ),
                )
            )
        self.fill(rows)

    def selected(self) -> tuple[str, str] | None:
        key = self.selected_key()
        if key is None:
            return None
        endpoint, _, name = key.partition("|")
        return endpoint, name

    async def action_control(self, verb: str) -> None:
        app: MaTop = self.app  # type: ignore[assignment]
        if (picked := self.selected()) is None or not app.allowed(f"{verb} process"):
            return
        endpoint, name = picked
        try:
            if verb in ("stop", "restart"):
                await ops.supervisor_call(endpoint, "stopProcess", name, True)
            if verb in ("start", "restart"):
                await ops.supervisor_call(endpoint, "startProcess", name, True)
            outcome = "ok"
        except RuntimeError as error:
            outcome = str(error)
        await app.journal.write(f"{verb} process", f"{endpoint_label(endpoint)} {name}", outcome=outcome)
        app.notify_action(f"{verb} {name}: {outcome}")
        await app.refresh_now()

    def action_rolling(self) -> None:
        """Restart every process of the selected program, one at a time, each back to RUNNING first."""
        app: MaTop = self.app  # type: ignore[assignment]
        if (picked := self.selected()) is None or not app.allowed("rolling restart"):
            return
        endpoint, name = picked
        group = name.split(":")[0]
        names = [p.full_name for p in app.processes if p.endpoint == endpoint and p.group == group]

        async def decided(yes: bool | None) -> None:
            if not yes:
                return
            try:
                done = await ops.rolling_restart(endpoint, names)
                outcome = f"{len(done)} restarted"
            except RuntimeError as error:
                outcome = str(error)
            await app.journal.write("rolling restart", f"{endpoint_label(endpoint)} {group}", outcome=outcome)
            app.notify_action(f"rolling restart {group}: {outcome}")
            await app.refresh_processes()

        self.app.push_screen(
            ConfirmScreen(f"rolling restart of {group} ({len(names)} process(es)), one at a time?"), decided
        )

    async def action_tail(self) -> None:
        if (picked := self.selected()) is None:
            return
        endpoint, name = picked
        text = await ops.supervisor_call(endpoint, "tailProcessStdoutLog", name, 0, 4000)
        self.query_one("#tail", Static).update("\n".join(str(text[0]).splitlines()[-12:]))


class RedisScreen(Base):
    BINDINGS = [Binding("escape", "app.show_view('queues')", "back")]

    def body(self) -> ComposeResult:
        yield Static("", id="redis")

    def render_snapshot(self, snapshot: Snapshot) -> None:
        super().render_snapshot(snapshot)
        r = snapshot.redis
        policy = r.policy if r.policy == "noeviction" else f"[red]{r.policy} — BullMQ needs noeviction[/red]"
        maxmem = f"{r.maxmemory / 2**20:.0f} MiB" if r.maxmemory else "no limit"
        self.query_one("#redis", Static).update(
            f"up: {r.up}  {r.error}\nversion {r.version}\nmemory {r.used_memory / 2**20:.1f} MiB / {maxmem}\n"
            f"clients {r.clients}   ops/s {r.ops_per_sec}   evicted keys {r.evicted_keys}\n"
            f"maxmemory-policy {policy}\nconnection failures seen by the pool: {r.connection_failures}"
        )


class FailuresScreen(Base):
    """Failed jobs grouped by signature (normalized reason + top frame); requeue a whole group."""

    BINDINGS = [
        Binding("escape", "app.show_view('queues')", "back"),
        Binding("R", "requeue_group", "requeue group"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.groups: list[ops.FailureGroup] = []
        self.loaded_at = 0.0

    def body(self) -> ComposeResult:
        table = DataTable(id="failures", cursor_type="row", zebra_stripes=True)
        table.add_columns("queue", "count", "first", "last", "jobs", "signature", "top frame")
        yield table

    def render_snapshot(self, snapshot: Snapshot) -> None:
        super().render_snapshot(snapshot)
        if time.monotonic() - self.loaded_at >= 5:  # grouping reads failed jobs: on its own slower timer
            self.loaded_at = time.monotonic()
            queues = [q.name for q in snapshot.queues if q.counts["failed"]]
            self.run_worker(self.load(queues), exclusive=True, group="failures", exit_on_error=False)

    async def load(self, queues: list[str]) -> None:
        app: MaTop = self.app  # type: ignore[assignment]
        groups = await ops.failure_groups(app.redis, queues)
        if not self.is_mounted or app.screen is not self:
            return
        self.groups = groups
        table = self.query_one(DataTable)
        row = table.cursor_row
        table.clear()
        for i, g in enumerate(groups):
            table.add_row(
                g.queue,
                g.count,
                when(g.first_seen),
                when(g.last_seen),
                ", ".join(g.names)[:30],
                g.signature[:70],
                g.top_frame,
                key=str(i),
            )
        if groups:
            table.move_cursor(row=min(row, len(groups) - 1))

    def action_requeue_group(self) -> None:
        app: MaTop = self.app  # type: ignore[assignment]
        table = self.query_one(DataTable)
        if not table.row_count or not app.allowed("requeue group"):
            return
        group = self.groups[table.cursor_row]
        ids = list(group.ids)  # the group as shown when the key was pressed

        async def decided(yes: bool | None) -> None:
            if not yes:
                return
            done, skipped = await ops.requeue(app.redis, group.queue, ids)
            await app.journal.write(
                "requeue group", f"{group.queue} {group.signature}", ids, f"{done} done, {skipped} skipped"
            )
            app.notify_action(f"requeued {done} job(s) of the group, {skipped} skipped")
            self.loaded_at = 0.0

        self.app.push_screen(
            ConfirmScreen(
                f"requeue {len(ids)} failed job(s) of {group.queue}?\n{group.example[:200]}\n"
                f"names: {', '.join(group.names)[:150]}\nfirst {when(group.first_seen)}  last {when(group.last_seen)}"
            ),
            decided,
        )


class BulkScreen(Base):
    """Bulk jobs: live from `super-admin.bulk-job.metrics`, with the last-state records for older ones."""

    BINDINGS = [Binding("escape", "app.show_view('queues')", "back")]

    def body(self) -> ComposeResult:
        table = DataTable(id="bulk", cursor_type="row", zebra_stripes=True)
        table.add_columns(
            "bulk job", "operation", "status", "progress", "failed", "items/s", "last heard", "where"
        )
        yield table

    def render_snapshot(self, snapshot: Snapshot) -> None:
        super().render_snapshot(snapshot)
        app: MaTop = self.app  # type: ignore[assignment]
        jobs = {j.bulk_job_id: j for j in snapshot.bulk_jobs}
        jobs.update(
            {k: v for k, v in app.live_bulk.items() if k not in jobs or v.updated_at >= jobs[k].updated_at}
        )
        table = self.query_one(DataTable)
        table.clear()
        for job in sorted(jobs.values(), key=lambda j: j.updated_at, reverse=True):
            heard = snapshot.taken_at - job.updated_at
            stale = " [red](silent)[/red]" if job.status in ("running", "throttled") and heard > 30 else ""
            table.add_row(
                job.bulk_job_id,
                job.operation,
                job.status,
                f"{job.processed}/{job.total}",
                job.failed,
                f"{job.throughput_per_sec:.1f}",
                age(heard) + stale,
                f"{job.host}:{job.pid}",
            )
