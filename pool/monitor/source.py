"""What a dashboard screen may ask of the system: `DataSource`, one interface for every read and every
action, and `LiveSource`, the real one over Redis and supervisord.

The screens in `tui/` hold a `DataSource` and nothing else that talks to the outside, so their keys can be
tested against an in-memory source (tests/support/fake_source.py) without Valkey or supervisord.
Read-only mode is the app's business (it refuses before calling an action); a source just acts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from redis.asyncio import Redis

from pool.connection import plain_redis
from pool.contracts import BULK_METRICS_CHANNEL
from pool.monitor import actions, audit, bulk_actions, events, queries, search, supervisor_source
from pool.monitor.actions import Journal, ProcessVerb
from pool.monitor.audit import AuditRead
from pool.monitor.bulk_actions import Action, ActionResult
from pool.monitor.collector import Collector
from pool.monitor.duplicates import DuplicateGroup, duplicate_groups
from pool.monitor.filters import parse
from pool.monitor.flows import Flow, read_flow
from pool.monitor.local import local_usage
from pool.monitor.queries import FailureGroup, JobRow
from pool.monitor.search import SearchProgress, SearchResult, TopValues
from pool.monitor.snapshot import BulkJob, Snapshot, bulk_job_from
from pool.monitor.supervisor_source import ProcessInfo, read_processes


class DataSource(Protocol):
    # -- reads ------------------------------------------------------------------------------------------
    async def fetch(self) -> Snapshot:
        """One snapshot of every queue, worker, Redis' health and the recent bulk jobs (O(1) in jobs)."""
        ...

    async def processes(self) -> tuple[list[ProcessInfo], dict[str, str]]:
        """Every supervisord endpoint's processes, and the endpoints that failed (label -> error)."""
        ...

    def local_usage(self, pids: list[int]) -> dict[int, tuple[float, float]]:
        """pid -> (RSS MiB, CPU %) for the processes on this host; others are left out."""
        ...

    async def jobs_page(self, queue: str, state: str, page: int) -> tuple[list[JobRow], int]:
        """One page of a state's jobs, newest first, and the state's total."""
        ...

    async def typical_duration_ms(self, queue: str) -> float | None:
        """Median run time of the queue's newest completed jobs (None when none completed)."""
        ...

    async def job_detail(self, queue: str, job_id: str) -> dict[str, Any] | None:
        """One job with its data (secrets masked), options, attempts, reason, trace and logs; None if gone."""
        ...

    async def events_after(self, last_id: str) -> list[tuple[str, dict[str, str]]]:
        """Event stream entries after `last_id` ("-": those of the last 15 minutes, by stream id), oldest first."""
        ...

    async def failure_groups(self, queues: list[str]) -> list[FailureGroup]:
        """The newest failed jobs of these queues grouped by signature, biggest group first."""
        ...

    async def duplicate_groups(self, queues: list[str]) -> list[DuplicateGroup]:
        """Jobs of these queues finished in the last hour with the same name and data under different ids
        (bounded; a slower check than `fetch`, run off the refresh path)."""
        ...

    def bulk_updates(self) -> AsyncIterator[BulkJob]:
        """Bulk-job telemetry as it is published; ends or raises when the channel is lost."""
        ...

    async def tail_log(self, endpoint: str, name: str) -> str:
        """The end of a supervisord process's stdout log."""
        ...

    async def flow(self, queue: str, job_id: str) -> Flow | None:
        """The job's parent and its children by group (counts, and the first of each), with what holds a
        parent in waiting-children; None when the job is gone. Bounded, read when a job's detail opens."""
        ...

    # -- actions (each one journaled by the caller through `journal`) ---------------------------------
    async def requeue(self, queue: str, ids: list[str]) -> tuple[int, int]:
        """Exactly these failed jobs back to wait with fresh attempts: (done, skipped)."""
        ...

    async def promote(self, queue: str, ids: list[str]) -> tuple[int, int]:
        """Exactly these delayed jobs to wait now: (done, skipped)."""
        ...

    async def set_paused(self, queue: str, paused: bool) -> None: ...

    async def control_process(self, endpoint: str, name: str, verb: ProcessVerb) -> None:
        """restart / stop / start one supervisord process; RuntimeError when supervisord refuses."""
        ...

    async def rolling_restart(self, endpoint: str, names: list[str]) -> list[str]:
        """These processes one at a time, each RUNNING again before the next; RuntimeError stops it."""
        ...

    async def journal(
        self, action: str, target: str, ids: list[str] | None = None, outcome: str = ""
    ) -> None:
        """Record an action in the audit trail (who@host, when, what, ids, outcome)."""
        ...

    async def audit_since(self, since_ms: int) -> AuditRead:
        """The audit trail's actions from `since_ms` (epoch ms) on, oldest first; from the local journal file
        when Redis does not answer (saying so)."""

    # -- search and bulk actions (issue 15) -----------------------------------------------------------
    async def search(
        self,
        queue: str,
        states: Sequence[str],
        expression: str,
        cap: int = 10_000,
        progress: Callable[[SearchProgress], None] | None = None,
    ) -> SearchResult:
        """The jobs of `states` matching a filter expression, newest first, at most `cap` read per state
        (run it off the refresh path: it scans). FilterError on a bad expression."""
        ...

    async def act(
        self,
        queue: str,
        action: Action,
        ids: Sequence[str],
        expression: str,
        progress: Callable[[int, int], None] | None = None,
    ) -> ActionResult:
        """requeue / promote / remove exactly these ids (the match set confirmed), in batches; journaled
        with the expression and the ids."""
        ...

    async def top_values(
        self, queue: str, field: str, sample: int = 10_000, state: str = "waiting"
    ) -> TopValues:
        """The most common values of a field (`name`, `data.organizationId`) over the newest `sample` jobs."""
        ...

    async def close(self) -> None: ...


SCAN_BATCH = 100
"""Jobs a scan reads and matches between two chances for the refresh to run (about 1 ms of work each)."""


class LiveSource:
    """The real system: Redis (a `Collector` for snapshots) and supervisord's XML-RPC endpoints."""

    def __init__(
        self,
        redis: Redis,
        supervisors: Sequence[str] = (),
        *,
        journal_path: Path = Path("var/ma-top-audit.log"),
        collector: Collector | None = None,
        recent_window_s: float = 300.0,
    ) -> None:
        """`recent_window_s`: how far back the pool's recent counts are read (the findings' rate window)."""
        self.redis = redis
        self.supervisors = list(supervisors)
        self.collector = collector or Collector(redis, recent_window_s=recent_window_s)
        self.audit = Journal(redis, journal_path)
        self._idle = asyncio.Event()
        """Set while no snapshot is being fetched: a scan (search, top values) waits for it before each batch,
        so a scan on the same client and event loop never slows ma-top's refresh."""
        self._idle.set()

    @classmethod
    def from_url(cls, url: str, supervisors: Sequence[str] = (), **kwargs: Any) -> LiveSource:
        redis = plain_redis(url, timeout=5)  # a redis+sentinel:// URL too
        return cls(redis, supervisors, **kwargs)

    async def fetch(self) -> Snapshot:
        self._idle.clear()
        try:
            return await self.collector.fetch()
        finally:
            self._idle.set()

    async def processes(self) -> tuple[list[ProcessInfo], dict[str, str]]:
        if not self.supervisors:
            return [], {}
        return await read_processes(self.supervisors)

    def local_usage(self, pids: list[int]) -> dict[int, tuple[float, float]]:
        return local_usage(pids)

    async def jobs_page(self, queue: str, state: str, page: int) -> tuple[list[JobRow], int]:
        return await queries.jobs_page(self.redis, queue, state, page)

    async def typical_duration_ms(self, queue: str) -> float | None:
        return await queries.typical_duration_ms(self.redis, queue)

    async def job_detail(self, queue: str, job_id: str) -> dict[str, Any] | None:
        return await queries.job_detail(self.redis, queue, job_id)

    async def events_after(self, last_id: str) -> list[tuple[str, dict[str, str]]]:
        return await events.events_after(self.redis, last_id)

    async def failure_groups(self, queues: list[str]) -> list[FailureGroup]:
        return await queries.failure_groups(self.redis, queues)

    async def duplicate_groups(self, queues: list[str]) -> list[DuplicateGroup]:
        return await duplicate_groups(self.redis, queues)

    async def bulk_updates(self) -> AsyncIterator[BulkJob]:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(BULK_METRICS_CHANNEL)
            while True:  # polled with a timeout, so cancellation at exit is prompt and clean
                message = await pubsub.get_message(timeout=1.0)
                if message and message.get("type") == "message":
                    job = bulk_job_from(message["data"])
                    if job is not None:
                        yield job
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call]

    async def tail_log(self, endpoint: str, name: str) -> str:
        return await supervisor_source.tail_log(endpoint, name)

    async def flow(self, queue: str, job_id: str) -> Flow | None:
        return await read_flow(self.redis, queue, job_id)

    async def requeue(self, queue: str, ids: list[str]) -> tuple[int, int]:
        return await actions.requeue(self.redis, queue, ids)

    async def promote(self, queue: str, ids: list[str]) -> tuple[int, int]:
        return await actions.promote(self.redis, queue, ids)

    async def set_paused(self, queue: str, paused: bool) -> None:
        await actions.set_paused(self.redis, queue, paused)

    async def control_process(self, endpoint: str, name: str, verb: ProcessVerb) -> None:
        await actions.control_process(endpoint, name, verb)

    async def rolling_restart(self, endpoint: str, names: list[str]) -> list[str]:
        return await actions.rolling_restart(endpoint, names)

    async def journal(
        self, action: str, target: str, ids: list[str] | None = None, outcome: str = ""
    ) -> None:
        await self.audit.write(action, target, ids, outcome)

    async def audit_since(self, since_ms: int) -> AuditRead:
        try:
            async with asyncio.timeout(5.0):  # a hung Redis: the local file instead
                return await audit.stream_since(self.redis, since_ms)
        except Exception as error:  # noqa: BLE001 - any failure of the stream: the file, and why
            reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            return await asyncio.to_thread(audit.file_since, self.audit.path, since_ms, reason)

    async def search(
        self,
        queue: str,
        states: Sequence[str],
        expression: str,
        cap: int = 10_000,
        progress: Callable[[SearchProgress], None] | None = None,
    ) -> SearchResult:
        return await search.search(
            self.redis,
            queue,
            states,
            parse(expression),
            cap=cap,
            progress=progress,
            batch=SCAN_BATCH,
            pause=self._idle.wait,
        )

    async def act(
        self,
        queue: str,
        action: Action,
        ids: Sequence[str],
        expression: str,
        progress: Callable[[int, int], None] | None = None,
    ) -> ActionResult:
        target, processed = f"{queue} {expression}".strip(), [0]

        def seen(done: int, total: int) -> None:
            processed[0] = done
            if progress:
                progress(done, total)

        try:
            result = await bulk_actions.act(self.redis, queue, action, ids, progress=seen)
        except asyncio.CancelledError:  # stopped between batches: the journal says how far it got
            outcome = f"cancelled after {processed[0]} of {len(ids)}"
            await asyncio.shield(self.audit.write(action, target, list(ids), outcome))
            raise
        await self.audit.write(action, target, list(ids), result.outcome)
        return result

    async def top_values(
        self, queue: str, field: str, sample: int = 10_000, state: str = "waiting"
    ) -> TopValues:
        return await search.top_values(
            self.redis, queue, field, sample=sample, state=state, batch=SCAN_BATCH, pause=self._idle.wait
        )

    async def close(self) -> None:
        await self.redis.aclose()
