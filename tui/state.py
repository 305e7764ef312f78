"""What ma-top has on hand between ticks: the last answer of every source, kept so a screen can render at
any time. No Textual here (asynq's dashboard calls this its state: the fetcher fills it, the drawer reads it).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace

from pool.monitor.events import EventRow, coalesce, ts_of
from pool.monitor.findings import Finding
from pool.monitor.snapshot import BulkJob, Snapshot
from pool.monitor.supervisor_source import ProcessInfo

EVENTS_KEPT = 10_000
"""As many as the capped stream holds (EVENTS_MAXLEN): the oldest by their own time go first."""


@dataclass
class TopState:
    snapshot: Snapshot | None = None
    findings: list[Finding] = field(default_factory=list)
    """What is wrong in that snapshot, most severe first (the badges and the findings pane show these)."""
    duplicates: list[Finding] = field(default_factory=list)
    """The background duplicate check's findings (`pool.monitor.duplicates`), as of its last run."""
    processes: list[ProcessInfo] = field(default_factory=list)
    process_errors: dict[str, str] = field(default_factory=dict)
    """supervisord endpoint label -> error, from the last read (an endpoint that answers again drops out)."""
    errors: dict[str, str] = field(default_factory=dict)
    """The dashboard's own sources that failed: `refresh`, `events`, `processes`, `bulk channel`."""
    events: list[dict[str, str]] = field(default_factory=list)
    """In the order of their own `ts` (a late delivery is put back where it happened)."""
    _rows: tuple[int, list[EventRow]] | None = None
    """`events` coalesced, with the number of reads it was made from: made again only after a read adds some."""
    _event_reads: int = 0
    last_event: str = "-"
    """Stream id of the newest event read: the next read starts after it."""
    live_bulk: dict[str, BulkJob] = field(default_factory=dict)
    """bulkJobId -> its latest message heard on the channel while ma-top watched."""
    restarts: dict[tuple[str, str], int] = field(default_factory=dict)
    """(endpoint, process) -> pid changes seen while ma-top watched (crash loops show here)."""
    pids: dict[tuple[str, str], int] = field(default_factory=dict)

    def set_snapshot(self, snapshot: Snapshot) -> None:
        """Keep `snapshot`; when Redis did not answer, with the last answered one's queues, workers and bulk jobs
        (`known_at` says when they were read), so the backlog stays on screen, aged, rather than blanking."""
        down = "redis" in snapshot.errors or not snapshot.redis.up
        last = self.snapshot
        if down and last is not None and (last.queues or last.workers):
            snapshot = replace(
                snapshot,
                queues=last.queues,
                workers=last.workers,
                bulk_jobs=last.bulk_jobs,
                schedulers=last.schedulers,
                known_at=last.known_at or last.taken_at,
            )
        self.snapshot = snapshot

    def add_events(self, entries: list[tuple[str, dict[str, str]]]) -> None:
        for entry_id, fields in entries:
            if self.events and ts_of(fields) < ts_of(self.events[-1]):
                bisect.insort_right(self.events, fields, key=ts_of)
            else:
                self.events.append(fields)
            self.last_event = entry_id
        self.events = self.events[-EVENTS_KEPT:]
        if entries:
            self._event_reads += 1

    def event_rows(self) -> list[EventRow]:
        """The kept events coalesced (repeats of a kind, queue and message in a minute), oldest first."""
        if self._rows is None or self._rows[0] != self._event_reads:
            self._rows = (self._event_reads, coalesce(self.events))
        return self._rows[1]

    def set_processes(self, processes: list[ProcessInfo], errors: dict[str, str]) -> None:
        self.processes, self.process_errors = processes, errors
        for p in processes:
            key = (p.endpoint, p.full_name)
            if p.pid and self.pids.get(key) not in (None, p.pid):
                self.restarts[key] = self.restarts.get(key, 0) + 1
            if p.pid:
                self.pids[key] = p.pid

    def bulk_jobs(self, snapshot: Snapshot) -> list[BulkJob]:
        """The snapshot's last-state records, each replaced by a live message at least as new; newest first."""
        jobs = {j.bulk_job_id: j for j in snapshot.bulk_jobs}
        jobs.update(
            {k: v for k, v in self.live_bulk.items() if k not in jobs or v.updated_at >= jobs[k].updated_at}
        )
        return sorted(jobs.values(), key=lambda j: j.updated_at, reverse=True)

    def all_errors(self, snapshot: Snapshot) -> dict[str, str]:
        return {**snapshot.errors, **self.process_errors, **self.errors}
