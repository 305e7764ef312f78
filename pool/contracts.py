"""Every Redis key, stream, channel and hash the pool, the handlers, the exporter and ma-top share, and the
shapes of the messages on them. The one home of each name: grep finds each literal here and nowhere else.

Dependency-free (standard library only) so that any package may import it; handlers import nothing else
from `pool` (an import-linter contract says so).

BullMQ's own keys are `bull:<queue>:<suffix>` (`bull_key`); everything of ours starts with `ma:`.
"""

from __future__ import annotations

from typing import Literal, TypedDict

# -- BullMQ -------------------------------------------------------------------------------------------------
BULL_PREFIX = "bull"

JOB_STATES = ("waiting", "active", "delayed", "prioritized", "failed", "completed", "waiting-children")
"""Job states as BullMQ's `getJobCounts` names them, in the order ma-top and the exporter list them."""

STATE_KEYS: dict[str, tuple[str, Literal["list", "zset"]]] = {
    "waiting": ("wait", "list"),
    "active": ("active", "list"),
    "delayed": ("delayed", "zset"),
    "prioritized": ("prioritized", "zset"),
    "failed": ("failed", "zset"),
    "completed": ("completed", "zset"),
    "waiting-children": ("waiting-children", "zset"),
}
"""State -> (key suffix under `bull:<queue>:`, Redis type). BullMQ keeps waiting jobs in the list `wait`."""


def bull_key(queue: str, *parts: str, prefix: str = BULL_PREFIX) -> str:
    """`bull:<queue>:<part>:...` — a job hash (`bull_key(q, job_id)`), a state set, `meta`, metrics."""
    return ":".join((prefix, queue, *parts))


# -- ours ---------------------------------------------------------------------------------------------------
EVENTS_STREAM = "ma:events"
"""Capped stream of worker events from every host (throttles, failures, stalls, Redis outages, schedules)."""
EVENTS_MAXLEN = 10_000

AUDIT_STREAM = "ma:audit"
"""Capped stream of operator actions (who@host, what, ids) from ma-top and the CLIs."""
AUDIT_MAXLEN = 100_000
"""Operator actions are rare and the trail is what an incident review reads: keep far more than events."""

WORKERS_INDEX = "ma:workers"
"""Sorted set heartbeat key -> last beat (ms); stale members are trimmed by every writer."""
HEARTBEAT_PREFIX = "ma:worker:"
HEARTBEAT_TTL = 20
"""Seconds a heartbeat lives without renewal: a worker gone that long is not counted."""

QUEUES_REGISTRY = "ma:queues"
"""Set of queue names a pool process has consumed (so a queue with jobs but no handler stands out)."""

STATS_PREFIX = "ma:stats:"
"""`ma:stats:<queue>`: cumulative counters across hosts and restarts (retries, throttled, stalled, ...);
`ma:stats:redis`: connection failures seen by the pool."""

BULK_METRICS_CHANNEL = "super-admin.bulk-job.metrics"
"""Pub/sub channel of bulk-job telemetry (`BulkMetrics`), about once a second per running bulk job."""
BULK_JOBS_KEY = "ma:bulk-jobs"
"""Hash bulkJobId -> JSON of the last `BulkMetrics` message, so a dashboard opened later still sees a bulk
job's state (pub/sub alone loses messages)."""
BULK_JOBS_KEEP = 200
BULK_ITEMS_PREFIX = "ma:bulk-items:"
"""`ma:bulk-items:<jobId>`: a filter's matches, frozen at the first run so a resumed job walks the same list."""

LATENCY_KEY = "ma:latency:task-assignment"
"""Capped list of task-assignment latency samples (seconds, newest first)."""
LATENCY_HIST_KEY = "ma:latency:task-assignment:hist"
"""Hash bucket -> count: the cumulative latency histogram the exporter serves."""


def stats_key(scope: str) -> str:
    return f"{STATS_PREFIX}{scope}"


def heartbeat_key(host: str, pid: int) -> str:
    return f"{HEARTBEAT_PREFIX}{host}:{pid}"


def bulk_items_key(job_id: str) -> str:
    return f"{BULK_ITEMS_PREFIX}{job_id}"


# -- message shapes -----------------------------------------------------------------------------------------
class BulkMetrics(TypedDict):
    """One message on `BULK_METRICS_CHANNEL` (and a value of `BULK_JOBS_KEY`)."""

    bulkJobId: str
    jobId: str
    operation: str
    status: str
    total: int
    processed: int
    succeeded: int
    failed: int
    throughputPerSec: float
    startedAt: str
    updatedAt: str
    host: str
    pid: int


class Heartbeat(TypedDict):
    """The JSON value of `ma:worker:<host>:<pid>`."""

    host: str
    pid: int
    queue: str
    process: str
    concurrency: int
    inFlight: list[str]
    processed: int
    failed: int
    throttled: int
    started: int
    lastBeat: int


class EventRecord(TypedDict, total=False):
    """One entry of `EVENTS_STREAM` (all values are strings, as Redis streams store them); `kind` is e.g.
    `failed`, `retry`, `throttled`, `stalled`, `redis-connection-error`, `redis-recovered`, `scheduled-task`,
    `bulk-item-failed`.

    One record is one event; a record of a kind in `COUNTED_KINDS` may stand for many occurrences (`count`) over
    a span of time (`since` .. `until`), e.g. a throttle window or one second of a bulk job's failed items."""

    ts: str
    """When the record was made (epoch ms): its place in time, whenever it reached the stream."""
    kind: str
    message: str
    queue: str
    host: str
    pid: str
    process: str
    jobId: str
    name: str
    attempt: str
    count: str
    """How many occurrences this record stands for; read only for the kinds in `COUNTED_KINDS`."""
    since: str
    """Epoch ms of the first occurrence this record stands for (absent: `ts`)."""
    until: str
    """Epoch ms of the last occurrence this record stands for (absent: `ts`)."""
    items: str
    """How many items a task touched (a scheduled task's purged rows): never an event count."""
    failures: str
    bulkJobId: str
    operation: str
    sample: str
    """JSON list of a few `{id, reason}` of the occurrences (a bulk job's failed items)."""
    failedTotal: str
    """A bulk job's failed items so far, this record's included."""


COUNTED_KINDS = {"throttled": "throttles", "bulk-item-failed": "failed items"}
"""Event kinds whose `count` says how many occurrences one record stands for, and what they are called."""


SUPERVISOR_STATES = ("STOPPED", "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL", "UNKNOWN")
