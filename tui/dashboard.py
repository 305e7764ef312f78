"""The app's core, without its views: the `DataSource` it holds, the state the ticks fill, and the gate that
refuses actions in read-only mode. Screens type their app as this (`Base.matop`), so they never import the
module that lists them (tui/app.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from datetime import datetime

from textual.app import App, ScreenStackError
from textual.css.query import NoMatches
from textual.worker import Worker

from pool.monitor.duplicates import EVERY_S as DUPLICATES_EVERY_S
from pool.monitor.duplicates import TIMEOUT_S as DUPLICATES_TIMEOUT_S
from pool.monitor.duplicates import duplicate_findings, with_duplicates
from pool.monitor.findings import History, Thresholds, findings
from pool.monitor.source import DataSource
from tui.state import TopState

SEARCH_CAP = 10_000


def search_cap_from_env(env: Mapping[str, str] = os.environ) -> int:
    """MA_TOP_SEARCH_CAP: jobs a search reads at most per state; ValueError naming the variable when malformed."""
    raw = env.get("MA_TOP_SEARCH_CAP", "")
    try:
        cap = int(raw) if raw else SEARCH_CAP
    except ValueError:
        raise ValueError(f"MA_TOP_SEARCH_CAP={raw!r} is not a whole number") from None
    if cap < 1:
        raise ValueError(f"MA_TOP_SEARCH_CAP={raw!r} must be at least 1")
    return cap


class Dashboard(App[None]):
    def __init__(
        self,
        source: DataSource,
        *,
        refresh_s: float = 1.0,
        read_only: bool = False,
        thresholds: Thresholds,
    ) -> None:
        super().__init__()
        self.source = source
        self.refresh_s = refresh_s
        self.read_only = read_only
        self.thresholds = thresholds
        self.state = TopState()
        self.history = History()
        """When Redis was last up, and each process's RSS trail: what the findings need from earlier ticks."""
        self.grafana_url = os.environ.get("TASKS_GRAFANA_DASHBOARD_URL", "")
        self.search_cap = search_cap_from_env()
        """Jobs a search (`/` in a queue) or a top-values read (`t`) reads at most per state."""
        self.message = ""
        self._tick_worker: Worker[None] | None = None
        self._processes_worker: Worker[None] | None = None
        self._duplicates_worker: Worker[None] | None = None

    def start_ticks(self) -> None:
        # Ticks run as workers, not inside the timers: a timer callback that awaits I/O makes the app's shutdown
        # wait for it (Timer._stop_all); a worker is cancelled at exit and never holds the shutdown up.
        self.set_interval(self.refresh_s, self._tick)
        self.set_interval(max(2.0, self.refresh_s * 3), self._tick_processes)
        self.set_interval(DUPLICATES_EVERY_S, self._tick_duplicates)
        self.call_later(self._tick_processes)
        self.call_later(self._tick)
        self.run_worker(self.listen_bulk(), group="bulk", exclusive=True, exit_on_error=False)

    async def listen_bulk(self) -> None:
        """Live bulk-job telemetry; the last-state records in the snapshot cover what pub/sub missed."""
        while True:
            self.state.errors.pop("bulk channel", None)
            try:
                async for job in self.source.bulk_updates():
                    self.state.live_bulk[job.bulk_job_id] = job
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - shown; retried
                self.state.errors["bulk channel"] = f"{type(error).__name__}: {error}"
            await asyncio.sleep(2)

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
            self.state.errors["refresh"] = f"{type(error).__name__}: {error}"

    async def _refresh(self) -> None:
        self.state.errors.pop("refresh", None)
        snapshot = await self.source.fetch()
        self.state.set_snapshot(snapshot)
        if self._duplicates_worker is None and "redis" not in snapshot.errors:
            self._tick_duplicates()  # the first check as soon as there are queues; then every 30 s
        self.state.findings = with_duplicates(
            findings(snapshot, self.history, self.state.processes or None, self.thresholds),
            self.state.duplicates if "redis" not in snapshot.errors else [],
        )
        if "redis" not in snapshot.errors:
            try:
                async with asyncio.timeout(
                    2.0
                ):  # a Redis that hangs now must not freeze the tick (and clock)
                    self.state.add_events(await self.source.events_after(self.state.last_event))
                self.state.errors.pop("events", None)
            except Exception as error:  # noqa: BLE001 - a failed source shows, the rest updates
                self.state.errors["events"] = str(error)
        self.render_screen()

    def render_screen(self) -> None:
        """Let the screen on top render the state, if it renders anything."""
        if self.state.snapshot is None:
            return
        try:
            screen = self.screen
        except ScreenStackError:  # shutting down: nothing left to render on
            return
        if hasattr(screen, "render_snapshot") and screen.is_mounted:
            # NoMatches: the screen is being composed or torn down right now; the next tick renders
            with contextlib.suppress(NoMatches):
                screen.render_snapshot(self.state.snapshot)

    def _tick_duplicates(self) -> None:
        if self._duplicates_worker is None or self._duplicates_worker.is_finished:
            self._duplicates_worker = self.run_worker(
                self.refresh_duplicates(), group="duplicates", exit_on_error=False
            )

    async def refresh_duplicates(self) -> None:
        """The slower duplicate check, off the tick: over the queues of the last snapshot Redis answered."""
        snapshot = self.state.snapshot
        if snapshot is None or snapshot.known_at is not None or not snapshot.queues:
            return
        try:
            async with asyncio.timeout(DUPLICATES_TIMEOUT_S):  # a hung Redis: given up, tried again next run
                groups = await self.source.duplicate_groups([q.name for q in snapshot.queues])
            self.state.duplicates = duplicate_findings(groups)
            self.state.errors.pop("duplicates", None)
        except Exception as error:  # noqa: BLE001 - shown, retried on the next run
            self.state.errors["duplicates"] = f"{type(error).__name__}: {error}"

    async def refresh_processes(self) -> None:
        try:
            self.state.set_processes(*await self.source.processes())
            self.state.errors.pop("processes", None)
        except Exception as error:  # noqa: BLE001 - shown, retried on the next tick
            self.state.errors["processes"] = f"{type(error).__name__}: {error}"
        self.render_screen()  # the header's process count, now rather than on the next tick

    def now(self) -> datetime:
        """The clock the screens show (snapshot tests freeze it)."""
        return datetime.now()

    def allowed(self, what: str) -> bool:
        if self.read_only:
            self.notify_action(f"read-only: {what} refused")
            return False
        return True

    def notify_action(self, text: str) -> None:
        self.message = text
        self.notify(text)
