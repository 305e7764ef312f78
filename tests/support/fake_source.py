"""An in-memory `DataSource` for ma-top's key tests: queues, jobs, processes and events as plain data, every
action recorded (and applied to the data, so the screens see its effect). No Valkey, no supervisord."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pool.contracts import JOB_STATES, RECENT_BUCKET_S, recent_field
from pool.monitor.actions import ProcessVerb
from pool.monitor.bulk_actions import ACTION_STATE, Action, ActionResult
from pool.monitor.duplicates import DuplicateGroup
from pool.monitor.filters import JobFields, display_value, field_value, parse
from pool.monitor.queries import PAGE, FailureGroup, JobRow
from pool.monitor.recent import RecentCounts
from pool.monitor.search import Match, SearchProgress, SearchResult, TopValues
from pool.monitor.snapshot import BulkJob, QueueStats, RedisHealth, Snapshot, WorkerBeat
from pool.monitor.source import DataSource
from pool.monitor.supervisor_source import ProcessInfo

T0 = 1_795_000_000.0


def queue_stats(name: str, *, paused: bool = False, workers: int = 1, **counts: int) -> QueueStats:
    """A queue's row; `counts` by state (`waiting=3, failed=2`), the rest zero."""
    return QueueStats(
        name,
        {state: counts.get(state.replace("-", "_"), 0) for state in JOB_STATES},
        paused,
        0,
        None,
        0,
        0,
        (0,),
        (0,),
        {},
        workers,
        True,
    )


def job_rows(prefix: str, n: int, *, name: str = "test.job", reason: str = "") -> list[JobRow]:
    """`n` jobs, newest first (ids `<prefix>-<n-1>` … `<prefix>-0`), one second apart."""
    t = int(T0 * 1000)
    return [
        JobRow(f"{prefix}-{i}", name, t + i * 1000, 1, reason, 0, t + i * 1000) for i in reversed(range(n))
    ]


def process(endpoint: str, group: str, n: int, pid: int, state: str = "RUNNING") -> ProcessInfo:
    return ProcessInfo(endpoint, group, f"{group}_{n:02d}", state, pid, int(T0) - 60, int(T0), f"pid {pid}")


@dataclass
class FakeSource:
    queues: list[QueueStats] = field(default_factory=list)
    jobs: dict[tuple[str, str], list[JobRow]] = field(default_factory=dict)
    """(queue, state) -> the jobs in that state, newest first."""
    procs: list[ProcessInfo] = field(default_factory=list)
    events: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    groups: list[FailureGroup] = field(default_factory=list)
    workers: list[WorkerBeat] = field(default_factory=list)
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    """Every action, in order: ("requeue", queue, ids), ("control_process", endpoint, name, verb), ..."""
    journal_entries: list[dict[str, Any]] = field(default_factory=list)
    bulk: asyncio.Queue[BulkJob] = field(default_factory=asyncio.Queue)
    recent: dict[tuple[str, str], int] = field(default_factory=dict)
    """(queue, counter) -> increments within the last minutes (what the rate findings read)."""
    payloads: dict[tuple[str, str], Any] = field(default_factory=dict)
    """(queue, job id) -> the job's data, what `search` and `top_values` match on (default: none)."""
    now_ms: int | None = None
    """The clock `search` measures ages against (default: the real one)."""

    # -- reads ------------------------------------------------------------------------------------------
    async def fetch(self) -> Snapshot:
        queues = tuple(sorted(self.queues, key=lambda q: q.name))  # as the collector lists them
        now = time.time()
        bucket = {recent_field(queue, counter): n for (queue, counter), n in self.recent.items()}
        recent = RecentCounts(now, 300.0, {int(now) // RECENT_BUCKET_S: bucket})
        return Snapshot(
            now, queues, tuple(self.workers), RedisHealth(True, policy="noeviction"), recent=recent
        )

    async def processes(self) -> tuple[list[ProcessInfo], dict[str, str]]:
        return list(self.procs), {}

    async def duplicate_groups(self, queues: list[str]) -> list[DuplicateGroup]:
        return []

    def local_usage(self, pids: list[int]) -> dict[int, tuple[float, float]]:
        return dict.fromkeys(pids, (64.0, 1.0))

    async def jobs_page(self, queue: str, state: str, page: int) -> tuple[list[JobRow], int]:
        rows = self.jobs.get((queue, state), [])
        return rows[page * PAGE : (page + 1) * PAGE], len(rows)

    async def typical_duration_ms(self, queue: str) -> float | None:
        return None

    async def job_detail(self, queue: str, job_id: str) -> dict[str, Any] | None:
        for (q, state), rows in self.jobs.items():
            for row in rows:
                if q == queue and row.id == job_id:
                    return {
                        "id": job_id,
                        "queue": queue,
                        "name": row.name,
                        "state": state,
                        "failedReason": row.failed_reason,
                        "stacktrace": [],
                    }
        return None

    async def events_after(self, last_id: str) -> list[tuple[str, dict[str, str]]]:
        return [(i, e) for i, e in self.events if last_id == "-" or i > last_id]

    async def failure_groups(self, queues: list[str]) -> list[FailureGroup]:
        return [g for g in self.groups if g.queue in queues]

    async def bulk_updates(self) -> AsyncIterator[BulkJob]:
        while True:
            yield await self.bulk.get()

    async def tail_log(self, endpoint: str, name: str) -> str:
        return f"log of {name}\nlast line"

    # -- actions ----------------------------------------------------------------------------------------
    def _move(self, queue: str, ids: list[str], source: str, target: str) -> tuple[int, int]:
        rows = self.jobs.get((queue, source), [])
        moved = [r for r in rows if r.id in ids]
        self.jobs[(queue, source)] = [r for r in rows if r.id not in ids]
        self.jobs[(queue, target)] = moved + self.jobs.get((queue, target), [])
        return len(moved), len(ids) - len(moved)

    async def requeue(self, queue: str, ids: list[str]) -> tuple[int, int]:
        self.calls.append(("requeue", queue, list(ids)))
        return self._move(queue, ids, "failed", "waiting")

    async def promote(self, queue: str, ids: list[str]) -> tuple[int, int]:
        self.calls.append(("promote", queue, list(ids)))
        return self._move(queue, ids, "delayed", "waiting")

    async def set_paused(self, queue: str, paused: bool) -> None:
        self.calls.append(("set_paused", queue, paused))
        self.queues = [dataclasses.replace(q, paused=paused) if q.name == queue else q for q in self.queues]

    async def control_process(self, endpoint: str, name: str, verb: ProcessVerb) -> None:
        self.calls.append(("control_process", endpoint, name, verb))

    async def rolling_restart(self, endpoint: str, names: list[str]) -> list[str]:
        self.calls.append(("rolling_restart", endpoint, list(names)))
        return list(names)

    async def journal(
        self, action: str, target: str, ids: list[str] | None = None, outcome: str = ""
    ) -> None:
        self.journal_entries.append(
            {"action": action, "target": target, "ids": ids or [], "outcome": outcome}
        )

    # -- search and bulk actions: the same matcher as the live source, over the in-memory jobs ---------
    def _fields(self, queue: str, state: str, row: JobRow) -> JobFields:
        data = self.payloads.get((queue, row.id))
        return JobFields(
            row.id, row.name, data, row.failed_reason or None, row.attempts_made, row.timestamp, state
        )

    async def search(
        self,
        queue: str,
        states: Sequence[str],
        expression: str,
        cap: int = 10_000,
        progress: Callable[[SearchProgress], None] | None = None,
    ) -> SearchResult:
        flt = parse(expression)
        now = self.now_ms if self.now_ms is not None else int(time.time() * 1000)
        self.calls.append(("search", queue, tuple(states), flt.text, cap))
        matches: list[Match] = []
        scanned: dict[str, int] = {}
        totals: dict[str, int] = {}
        capped: dict[str, bool] = {}
        for state in states:
            rows = self.jobs.get((queue, state), [])
            totals[state], scanned[state], capped[state] = len(rows), min(cap, len(rows)), len(rows) > cap
            hits = [r for r in rows[:cap] if flt.matches(self._fields(queue, state, r), now)]
            matches += [
                Match(r.id, state, r.name, r.timestamp, r.attempts_made, r.failed_reason) for r in hits
            ]
            if progress:
                progress(SearchProgress(queue, state, scanned[state], len(hits), totals[state]))
        return SearchResult(queue, flt.text, tuple(states), tuple(matches), scanned, totals, capped, cap, now)

    async def act(
        self,
        queue: str,
        action: Action,
        ids: Sequence[str],
        expression: str,
        progress: Callable[[int, int], None] | None = None,
    ) -> ActionResult:
        self.calls.append(("act", queue, action, list(ids), expression))
        if action in ACTION_STATE:
            done, skipped = self._move(queue, list(ids), ACTION_STATE[action], "waiting")
        else:
            wanted, done = set(ids), 0
            for (q, state), rows in self.jobs.items():
                if q == queue and state != "active":
                    kept = [r for r in rows if r.id not in wanted]
                    done += len(rows) - len(kept)
                    self.jobs[(q, state)] = kept
            skipped = len(ids) - done
        if progress:
            progress(len(ids), len(ids))
        result = ActionResult(done, skipped)
        await self.journal(action, f"{queue} {expression}".strip(), list(ids), result.outcome)
        return result

    async def top_values(
        self, queue: str, field: str, sample: int = 10_000, state: str = "waiting"
    ) -> TopValues:
        parse(f"{field}!=_")  # the same field paths as a filter (FilterError otherwise)
        rows = self.jobs.get((queue, state), [])
        now = self.now_ms if self.now_ms is not None else int(time.time() * 1000)
        counts = Counter(
            display_value(field_value(self._fields(queue, state, r), field, now)) for r in rows[:sample]
        )
        ranked = tuple(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
        return TopValues(queue, field, state, sum(counts.values()), len(rows), ranked)

    async def close(self) -> None:
        pass


def _implements_the_protocol(source: FakeSource) -> DataSource:
    return source  # mypy: FakeSource has every DataSource method, with the same signatures
