"""What one fetch of the data layer returns: an immutable snapshot of the system (queues, heartbeats, Redis'
health, bulk jobs, the pool's recent counts), and the parsers of the records it is read from. No Redis here:
`pool.monitor.collector` reads it; ma-top, `ma-top --once` and the exporter show it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pool.monitor.downstreams import DownstreamStats
from pool.monitor.failure_growth import RecentFailures
from pool.monitor.recent import RecentCounts
from pool.monitor.schedulers import Scheduler


@dataclass(frozen=True)
class ActiveJob:
    id: str
    name: str
    running_s: float
    """Since BullMQ moved it to active this time (`processedOn`), by Redis' clock."""


@dataclass(frozen=True)
class QueueStats:
    name: str
    counts: Mapping[str, int]
    paused: bool
    rate_limited_ms: int
    oldest_waiting_s: float | None
    completed_total: int
    failed_total: int
    completed_per_min: tuple[int, ...]
    """Jobs finished per minute, newest first: index i is the minute i minutes before the collector's now
    (index 0 the current, partial one); a minute with no finished job is 0 (`rates.minute_series`)."""
    failed_per_min: tuple[int, ...]
    counters: Mapping[str, int]
    """Our own cumulative counters from the pool (retries, throttled, stalled, ...)."""
    workers: int = 0
    handled: bool = True
    """False for a queue no pool process ever registered and no queue table names (a new product's queue)."""
    minute_at: float = 0.0
    """Epoch seconds at which index 0 of the per-minute series begins (point i: `minute_at - 60 * i`)."""
    oldest_active: tuple[ActiveJob, ...] = ()
    """The longest-running of its active jobs (at most OLDEST_ACTIVE), longest first."""


@dataclass(frozen=True)
class WorkerBeat:
    host: str
    pid: int
    queue: str
    process: str
    concurrency: int
    in_flight: tuple[str, ...]
    processed: int
    failed: int
    throttled: int
    started: int
    last_beat: int
    rss: int = 0
    """Resident set size in bytes at the beat (0: not reported, a pool older than the field)."""
    cpu: float | None = None
    """CPU percent of one core since the previous beat (None: not reported)."""
    rss_trail: tuple[tuple[int, int], ...] = ()
    """(epoch ms, RSS bytes), oldest first: the RSS of the process's last hour, as the process kept it."""


@dataclass(frozen=True)
class RedisHealth:
    up: bool
    used_memory: int = 0
    maxmemory: int = 0
    not_counted_for_evict: int = 0
    """INFO's mem_not_counted_for_evict (AOF and replication buffers): Redis refuses writes (OOM) when
    used_memory minus this exceeds maxmemory."""
    clients: int = 0
    ops_per_sec: int = 0
    evicted_keys: int = 0
    policy: str = ""
    version: str = ""
    connection_failures: int = 0
    error: str = ""


@dataclass(frozen=True)
class BulkJob:
    bulk_job_id: str
    job_id: str
    operation: str
    status: str
    total: int
    processed: int
    succeeded: int
    failed: int
    throughput_per_sec: float
    started_at: float
    updated_at: float
    """Epoch seconds of the publisher's last message."""
    host: str
    pid: int


def bulk_job_from(raw: str) -> BulkJob | None:
    """A telemetry message (channel or last-state record) as a BulkJob; None when malformed."""
    try:
        m = json.loads(raw)
        return BulkJob(
            str(m["bulkJobId"]),
            str(m.get("jobId", "")),
            str(m.get("operation", "")),
            str(m.get("status", "")),
            as_int(m.get("total")),
            as_int(m.get("processed")),
            as_int(m.get("succeeded")),
            as_int(m.get("failed")),
            float(m.get("throughputPerSec") or 0),
            epoch_s(m.get("startedAt")),
            epoch_s(m.get("updatedAt")),
            str(m.get("host", "")),
            as_int(m.get("pid")),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


@dataclass(frozen=True)
class Snapshot:
    taken_at: float
    queues: tuple[QueueStats, ...]
    workers: tuple[WorkerBeat, ...]
    redis: RedisHealth
    errors: Mapping[str, str] = field(default_factory=dict)
    bulk_jobs: tuple[BulkJob, ...] = ()
    """Source -> error text, for the sources that failed this time (the rest is still fresh)."""
    recent: RecentCounts = field(default_factory=RecentCounts)
    """The pool's counters over the last minutes (retries, throttled, stalled, ...): what rates are taken from."""
    downstreams: tuple[DownstreamStats, ...] = ()
    """The pool's requests to identity, Supabase, Stripe and PostgreSQL by outcome (lifetime, recent minutes)."""
    recent_failures: tuple[RecentFailures, ...] = ()
    """Each queue's jobs failed in the last minutes, by signature (read on a slower timer: `failures_read_at`)."""
    failures_read_at: float = 0.0
    schedulers: tuple[Scheduler, ...] = ()
    """Every job scheduler of the queues, with this tick's next run (their details on a slower timer)."""
    known_at: float | None = None
    """Set when Redis did not answer this time and the queues, workers and bulk jobs are the last known ones:
    the time of the snapshot they come from (a screen shows them with their age rather than a blank)."""

    def queue(self, name: str) -> QueueStats | None:
        return next((q for q in self.queues if q.name == name), None)


def as_int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def as_float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def rss_trail(value: Any) -> tuple[tuple[int, int], ...]:
    """A heartbeat's RSS trail; () when absent or malformed (a bad record must not hide the beat)."""
    try:
        return tuple((int(at), int(rss)) for at, rss in value or ())
    except (TypeError, ValueError):
        return ()


def epoch_s(value: Any) -> float:
    """Epoch seconds from epoch ms, epoch s or an ISO-8601 string."""
    if isinstance(value, int | float):
        return value / 1000 if value > 1e11 else float(value)
    if isinstance(value, str) and value:
        from datetime import datetime

        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return 0.0
