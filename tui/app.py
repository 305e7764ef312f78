"""ma-top: the on-call dashboard. `ma-top [--redis-url URL] [--supervisor URL ...] [--refresh S] [--read-only]`,
or `ma-top --once [--json]` for scripts, or `ma-top --report FILE [--hours N]` for an incident report."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual.binding import Binding

from pool.monitor.duplicates import TIMEOUT_S as DUPLICATES_TIMEOUT_S
from pool.monitor.duplicates import duplicate_findings, with_duplicates
from pool.monitor.findings import History, Thresholds, as_text, findings
from pool.monitor.report import DEFAULT_HOURS
from pool.monitor.source import DataSource, LiveSource
from pool.monitor.supervisor_source import endpoint_label
from pool.settings import EX_CONFIG
from tui.dashboard import Dashboard, search_cap_from_env
from tui.format import plain
from tui.report_key import report_once, write_from_app
from tui.screens import (
    BulkScreen,
    EventsScreen,
    FailuresScreen,
    HelpScreen,
    ProcessesScreen,
    QueuesScreen,
    RedisScreen,
    SchedulersScreen,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis


class MaTop(Dashboard):
    """The dashboard with its views: `1`-`6` switch between them, `?` helps, `q` quits."""

    CSS_PATH = str(Path(__file__).parent / "app.tcss")  # absolute: subclasses live elsewhere
    TITLE = "ma-top"
    BINDINGS: ClassVar = [
        Binding("1", "show_view('queues')", "queues"),
        Binding("2", "show_view('events')", "events"),
        Binding("3", "show_view('processes')", "processes"),
        Binding("4", "show_view('redis')", "redis"),
        Binding("5", "show_view('failures')", "failures"),
        Binding("6", "show_view('bulk')", "bulk jobs"),
        Binding("7", "show_view('schedulers')", "schedulers"),
        Binding("question_mark", "help", "help"),
        Binding("q", "quit", "quit"),
        Binding("W", "write_report", "incident report", show=False),  # in the help (footers stay as they are)
    ]
    MODES: ClassVar = {
        "queues": QueuesScreen,
        "events": EventsScreen,
        "processes": ProcessesScreen,
        "redis": RedisScreen,
        "failures": FailuresScreen,
        "bulk": BulkScreen,
        "schedulers": SchedulersScreen,
    }

    def __init__(
        self,
        redis: Redis | None = None,
        supervisors: Sequence[str] = (),
        *,
        source: DataSource | None = None,
        refresh_s: float = 1.0,
        read_only: bool = False,
        journal_path: Path = Path("var/ma-top-audit.log"),
        thresholds: Thresholds | None = None,
    ) -> None:
        """Over the live system (`redis` and the supervisord endpoints) or over any `source` (tests)."""
        thresholds = thresholds or Thresholds.from_env()
        if source is None:
            if redis is None:
                raise TypeError("MaTop needs a Redis client or a DataSource")
            source = LiveSource(
                redis, supervisors, journal_path=journal_path, recent_window_s=thresholds.rate_window_s
            )
        super().__init__(source, refresh_s=refresh_s, read_only=read_only, thresholds=thresholds)
        self.sub_title = ("READ-ONLY  " if read_only else "") + (self.grafana_url or "")

    def on_mount(self) -> None:
        self.switch_mode("queues")
        self.start_ticks()

    def action_show_view(self, mode: str) -> None:
        self.switch_mode(mode)
        self.render_screen()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_write_report(self) -> None:
        """`var/incident-<UTC time>.md`, written by a worker (it scans the failed jobs): the path is notified."""
        self.run_worker(write_from_app(self), group="report", exit_on_error=False)


async def _once(source: DataSource, as_json: bool, thresholds: Thresholds) -> int:
    snapshot = await source.fetch()
    processes, errors = await source.processes()
    # One snapshot: the rate findings (retries, stalled, throttled) come from the pool's recent counts in Redis.
    found = findings(snapshot, History(), processes or None, thresholds)
    if snapshot.redis.up and "redis" not in snapshot.errors:  # the slower duplicate check, run once
        try:
            groups = await asyncio.wait_for(
                source.duplicate_groups([q.name for q in snapshot.queues]), DUPLICATES_TIMEOUT_S
            )
            found = with_duplicates(found, duplicate_findings(groups))
        except Exception as error:  # noqa: BLE001 - one source failing: shown, the rest printed
            errors["duplicates"] = f"{type(error).__name__}: {error}"
    if as_json:
        body: dict[str, Any] = dataclasses.asdict(snapshot)
        # by host label: an http endpoint's credentials never reach the output (actions need them, JSON does not)
        body["processes"] = [
            {**dataclasses.asdict(p), "endpoint": endpoint_label(p.endpoint)} for p in processes
        ]
        body["errors"] = {**snapshot.errors, **errors}
        body["findings"] = [dataclasses.asdict(f) for f in found]
        print(json.dumps(body, default=str))
    else:
        print(plain(snapshot, thresholds.rate_window_s))
        print(as_text(found))
    await source.close()
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
    parser.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="write an incident report (markdown) to FILE, print its path",
    )
    parser.add_argument("--hours", type=float, default=DEFAULT_HOURS, help="with --report: hours covered (2)")
    args = parser.parse_args(argv)
    if args.hours <= 0:
        parser.error("--hours must be more than 0")
    if not args.redis_url:
        print("ma-top: REDIS_URL is not set (Redis connection string); pass --redis-url", file=sys.stderr)
        return 2
    try:
        thresholds = Thresholds.from_env()
        search_cap_from_env()
    except ValueError as error:
        print(f"ma-top: configuration error: {error}", file=sys.stderr)
        return EX_CONFIG
    supervisors = args.supervisor if args.supervisor is not None else _default_supervisor()
    source = LiveSource.from_url(args.redis_url, supervisors, recent_window_s=thresholds.rate_window_s)
    if args.once:
        return asyncio.run(_once(source, args.json, thresholds))
    if args.report:
        return asyncio.run(report_once(source, args.report, args.hours, thresholds))
    MaTop(source=source, refresh_s=args.refresh, read_only=args.read_only, thresholds=thresholds).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
