"""ma-top: the on-call dashboard. `ma-top [--redis-url URL] [--supervisor URL ...] [--refresh S] [--read-only]`,
or `ma-top --once [--json]` for scripts."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from redis.asyncio import Redis
from textual.app import App, ScreenStackError
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.worker import Worker

from pool.monitor.collector import BulkJob, Collector, Snapshot, bulk_job_from
from pool.monitor.supervisor_source import ProcessInfo, read_processes
from tui import ops
from tui.screens import (
    BulkScreen,
    EventsScreen,
    FailuresScreen,
    HelpScreen,
    ProcessesScreen,
    QueuesScreen,
    RedisScreen,
)

THRESHOLDS = {"billing_usage_backlog": 300, "payment_sync_retries": 50}
"""The runbook's alert thresholds; override with MA_TOP_BILLING_USAGE_BACKLOG / MA_TOP_PAYMENT_SYNC_RETRIES."""
BULK_CHANNEL = "super-admin.bulk-job.metrics"


def thresholds_from_env() -> dict[str, int]:
    return {
        name: int(os.environ.get(f"MA_TOP_{name.upper()}", default)) for name, default in THRESHOLDS.items()
    }


class MaTop(App[None]):
    CSS_PATH = str(Path(__file__).parent / "app.tcss")  # absolute: subclasses live elsewhere
    TITLE = "ma-top"
    BINDINGS: ClassVar = [
        Binding("1", "show_view('queues')", "queues"),
        Binding("2", "show_view('events')", "events"),
        Binding("3", "show_view('processes')", "processes"),
        Binding("4", "show_view('redis')", "redis"),
        Binding("5", "show_view('failures')", "failures"),
        Binding("6", "show_view('bulk')", "bulk jobs"),
        Binding("question_mark", "help", "help"),
        Binding("q", "quit", "quit"),
    ]
    MODES: ClassVar = {
        "queues": QueuesScreen,
        "events": EventsScreen,
        "processes": ProcessesScreen,
        "redis": RedisScreen,
        "failures": FailuresScreen,
        "bulk": BulkScreen,
    }

    def __init__(
        self,
        redis: Redis,
        supervisors: list[str],
        *,
        refresh_s: float = 1.0,
        read_only: bool = False,
        journal_path: Path = Path("var/ma-top-audit.log"),
        thresholds: dict[str, int] | None = None,
        collector: Any = None,
    ) -> None:
        super().__init__()
        self.redis = redis
        self.collector = collector or Collector(redis)
        self.supervisors = supervisors
        self.refresh_s = refresh_s
        self.read_only = read_only
        self._tick_worker: Worker[None] | None = None
        self._processes_worker: Worker[None] | None = None
        self.journal = ops.Journal(redis, journal_path)
        self.thresholds = thresholds or thresholds_from_env()
        self.live_bulk: dict[str, BulkJob] = {}
        self.restarts: dict[tuple[str, str], int] = {}
        """(endpoint, process) -> pid changes seen while ma-top watched (crash loops show here)."""
        self._pids: dict[tuple[str, str], int] = {}
        self.grafana_url = os.environ.get("TASKS_GRAFANA_DASHBOARD_URL", "")
        self.snapshot: Snapshot | None = None
        self.processes: list[ProcessInfo] = []
        self.supervisor_errors: dict[str, str] = {}
        self.events: list[dict[str, str]] = []
        self._last_event = "-"
        self.message = ""
        self.sub_title = ("READ-ONLY  " if read_only else "") + (self.grafana_url or "")

    def on_mount(self) -> None:
        self.switch_mode("queues")
        # Ticks run as workers, not inside the timers: a timer callback that awaits I/O makes the app's shutdown
        # wait for it (Timer._stop_all); a worker is cancelled at exit and never holds the shutdown up.
        self.set_interval(self.refresh_s, self._tick)
        self.set_interval(max(2.0, self.refresh_s * 3), self._tick_processes)
        self.call_later(self._tick_processes)
        self.call_later(self._tick)
        self.run_worker(self.listen_bulk(), group="bulk", exclusive=True, exit_on_error=False)

    async def listen_bulk(self) -> None:
        """Live bulk-job telemetry; the last-state records in the snapshot cover what pub/sub missed."""
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(BULK_CHANNEL)
                while True:  # polled with a timeout, so cancellation at exit is prompt and clean
                    message = await pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message":
                        job = bulk_job_from(message["data"])
                        if job is not None:
                            self.live_bulk[job.bulk_job_id] = job
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - shown; retried
                self.supervisor_errors["bulk channel"] = f"{type(error).__name__}: {error}"
                await asyncio.sleep(2)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pubsub.aclose(), 1.0)

    def _tick(self) -> None:
        if self._tick_worker is None or self._tick_worker.is_finished:  # a slow tick is not piled up on
            self._tick_worker = self.run_worker(self.refresh_now(), group="tick", exit_on_error=False)

    def _tick_processes(self) -> None:
        if self._processes_worker is None or self._processes_worker.is_finished:
            self._processes_worker = self.run_worker(
                self.refresh_processes(), group="processes", exit_on_error=False
            )

    async def refresh_now(self) -> None:
        """One tick. A dashboard must not die of a bad record or a flaky source: errors show, ticks go on."""
        try:
            await self._refresh()
        except Exception as error:  # noqa: BLE001
            self.supervisor_errors["refresh"] = f"{type(error).__name__}: {error}"

    async def _refresh(self) -> None:
        self.supervisor_errors.pop("refresh", None)
        self.snapshot = await self.collector.fetch()
        if "redis" not in self.snapshot.errors:
            try:
                for entry_id, fields in await ops.events_after(self.redis, self._last_event):
                    self.events.append(fields)
                    self._last_event = entry_id
                self.events = self.events[-2000:]
            except Exception as error:  # noqa: BLE001 - a failed source shows, the rest updates
                self.supervisor_errors["events"] = str(error)
        try:
            screen = self.screen
        except ScreenStackError:  # shutting down: nothing left to render on
            return
        if hasattr(screen, "render_snapshot") and screen.is_mounted:
            # NoMatches: the screen is being composed or torn down right now; the next tick renders
            with contextlib.suppress(NoMatches):
                screen.render_snapshot(self.snapshot)

    async def refresh_processes(self) -> None:
        try:
            await self._refresh_processes()
        except Exception as error:  # noqa: BLE001 - shown, retried on the next tick
            self.supervisor_errors["processes"] = f"{type(error).__name__}: {error}"

    async def _refresh_processes(self) -> None:
        if self.supervisors:
            self.processes, self.supervisor_errors = await read_processes(self.supervisors)
            for p in self.processes:
                key = (p.endpoint, p.full_name)
                if p.pid and self._pids.get(key) not in (None, p.pid):
                    self.restarts[key] = self.restarts.get(key, 0) + 1
                if p.pid:
                    self._pids[key] = p.pid

    def action_show_view(self, mode: str) -> None:
        self.switch_mode(mode)
        if self.snapshot is not None and hasattr(self.screen, "render_snapshot") and self.screen.is_mounted:
            self.screen.render_snapshot(self.snapshot)

    def now(self) -> datetime:
        """The clock the screens show (snapshot tests freeze it)."""
        return datetime.now()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def allowed(self, what: str) -> bool:
        if self.read_only:
            self.notify_action(f"read-only: {what} refused")
            return False
        return True

    def notify_action(self, text: str) -> None:
        self.message = text
        self.notify(text)


def _plain(snapshot: Snapshot) -> str:
    lines = [
        f"redis {'up' if snapshot.redis.up else 'DOWN ' + snapshot.redis.error}  workers {len(snapshot.workers)}"
    ]
    lines.append(
        f"{'queue':28} {'wait':>7} {'active':>7} {'delayed':>7} {'failed':>7} {'oldest':>8} {'workers':>7}"
    )
    for q in snapshot.queues:
        oldest = f"{q.oldest_waiting_s:.0f}s" if q.oldest_waiting_s is not None else "-"
        lines.append(
            f"{q.name:28} {q.counts['waiting']:>7} {q.counts['active']:>7} {q.counts['delayed']:>7} "
            f"{q.counts['failed']:>7} {oldest:>8} {q.workers:>7}"
        )
    return "\n".join(lines)


async def _once(redis: Redis, as_json: bool, supervisors: list[str]) -> int:
    snapshot = await Collector(redis).fetch()
    processes, errors = await read_processes(supervisors) if supervisors else ([], {})
    if as_json:
        body: dict[str, Any] = dataclasses.asdict(snapshot)
        body["processes"] = [dataclasses.asdict(p) for p in processes]
        body["errors"] = {**snapshot.errors, **errors}
        print(json.dumps(body, default=str))
    else:
        print(_plain(snapshot))
    await redis.aclose()
    return 0 if snapshot.redis.up else 1


def _default_supervisor() -> list[str]:
    sock = Path("var/supervisor.sock")
    return [f"unix://{sock.resolve()}"] if sock.exists() else []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ma-top", description=__doc__)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument(
        "--supervisor",
        action="append",
        default=None,
        help="supervisord endpoint (unix:///path/var/supervisor.sock or http://host:port); repeat",
    )
    parser.add_argument("--refresh", type=float, default=1.0, help="seconds between refreshes")
    parser.add_argument("--read-only", action="store_true", help="refuse every action")
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit")
    parser.add_argument("--json", action="store_true", help="with --once: the snapshot as JSON")
    args = parser.parse_args(argv)
    if not args.redis_url:
        print("ma-top: REDIS_URL is not set (Redis connection string); pass --redis-url", file=sys.stderr)
        return 2
    supervisors = args.supervisor if args.supervisor is not None else _default_supervisor()
    redis = Redis.from_url(args.redis_url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5)
    if args.once:
        return asyncio.run(_once(redis, args.json, supervisors))
    MaTop(redis, supervisors, refresh_s=args.refresh, read_only=args.read_only).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
