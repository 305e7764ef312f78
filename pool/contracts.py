"""Every Redis key, stream, channel and hash the pool, the handlers, the exporter and ma-top share, and the
shapes of the messages on them. The one home of each name: grep finds each literal here and nowhere else.

Dependency-free (standard library only) so that any package may import it; handlers import nothing else
from `pool` (an import-linter contract says so).

BullMQ's own keys are `bull:<queue>:<suffix>` (`bull_key`); everything of ours starts with `ma:`.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

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


FLOW_PENDING = "dependencies"
"""`bull:<q>:<parent id>:dependencies`: set of the keys (`bull:<childq>:<child id>`) of the children not yet
finished: the parent waits in `waiting-children` while it is not empty. A child that failed with none of the
options below stays in it, and so holds its parent there until it is retried or removed."""
FLOW_PROCESSED = "processed"
"""`...:processed`: hash child key -> the child's return value (JSON), once it completed."""
FLOW_IGNORED = "failed"
"""`...:failed`: hash child key -> failed reason of the children that failed with
`ignoreDependencyOnFailure` or `continueParentOnFailure` (the parent went on without them)."""
FLOW_UNSUCCESSFUL = "unsuccessful"
"""`...:unsuccessful`: sorted set child key -> when, the children that failed with `failParentOnFailure`
(the parent is moved to wait with a deferred failure, `defa`, and fails when a worker takes it)."""
JOB_LOCK = "lock"
"""`bull:<q>:<id>:lock`: held by the worker running the job (an active job without it has stalled)."""


def split_job_key(key: str, prefix: str = BULL_PREFIX) -> tuple[str, str] | None:
    """`bull:<queue>:<id>` -> (queue, id), as a flow's child and parent keys are stored; None if not one.
    A queue name has no `:` (BullMQ refuses it); a job id may (`repeat:<key>:<millis>`, the one custom form
    BullMQ lets through), so the id is everything after the queue."""
    if not key.startswith(f"{prefix}:"):
        return None
    queue, _, job_id = key[len(prefix) + 1 :].partition(":")
    return (queue, job_id) if queue and job_id else None


SCHEDULERS_SUFFIX = "repeat"
"""`bull:<queue>:repeat`: BullMQ's job schedulers, a sorted set of scheduler id scored by its next run (epoch ms);
`bull:<queue>:repeat:<id>` the scheduler's hash (name, pattern or every, tz, data, opts, `ic` = iterations made)."""


def scheduler_job_id(scheduler_id: str, run_ms: int) -> str:
    """The id BullMQ gives the job a scheduler makes for its run at `run_ms` (its hash: `bull_key(q, id)`)."""
    return f"repeat:{scheduler_id}:{run_ms}"


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

RECENT_PREFIX = "ma:recent:"
"""`ma:recent:<bucket>`: hash `<scope>|<counter>` -> the increments of the pool's counters (the same as
`ma:stats:<scope>`) counted within that bucket of RECENT_BUCKET_S seconds (bucket = epoch seconds // size), from
every host. The rates over the last minutes are taken from these, so `ma-top --once`, a freshly opened ma-top
and the exporter read the same rate from Redis with no history of their own. Each bucket lives RECENT_KEEP_S."""
RECENT_BUCKET_S = 10
RECENT_KEEP_S = 3600

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


DOWNSTREAMS = ("identity", "supabase", "stripe", "postgres")
"""What the pool's jobs call, each recorded per request and outcome (`pool/downstream.py`)."""
DOWNSTREAM_OUTCOMES = ("ok", "429", "4xx", "5xx", "timeout", "connection-error", "error", "saturated")
"""A request's outcome: an HTTP status class, no answer in time, no connection; `error` is a PostgreSQL error
that is the query's, not the server's (a constraint, a syntax error); `saturated`: PostgreSQL refused the
connection, at max_connections (SQLSTATE 53300, "too many clients")."""
DOWNSTREAM_FAILURES = ("5xx", "timeout", "connection-error", "saturated")
"""The outcomes that say a downstream is failing (not a refusal of ours, nor throttling)."""
DOWNSTREAM_PREFIX = "ma:downstream:"
"""`ma:downstream:<name>`: hash `<outcome>:<epoch minute>` -> requests in that minute (the last
DOWNSTREAM_KEEP_MINUTES, trimmed by the writers, the key expiring an hour after the last write), so one read
tells what happened in the last minutes (by the writers' clocks) without a history of earlier reads.
The lifetime counts per outcome are `ma:stats:downstream:<name>`."""
DOWNSTREAM_KEEP_MINUTES = 16
DOWNSTREAM_TTL = 3600


def downstream_scope(name: str) -> str:
    """The `ma:stats:` scope of a downstream's lifetime counters (`stats_key(downstream_scope(name))`)."""
    return f"downstream:{name}"


def downstream_key(name: str) -> str:
    return f"{DOWNSTREAM_PREFIX}{name}"


def downstream_field(outcome: str, minute: int) -> str:
    """The field of `downstream_key` counting `outcome` in epoch minute `minute` (epoch seconds // 60)."""
    return f"{outcome}:{minute}"


def stats_key(scope: str) -> str:
    return f"{STATS_PREFIX}{scope}"


def recent_key(bucket: int) -> str:
    return f"{RECENT_PREFIX}{bucket}"


def recent_field(scope: str, counter: str) -> str:
    return f"{scope}|{counter}"


def heartbeat_key(host: str, pid: int) -> str:
    return f"{HEARTBEAT_PREFIX}{host}:{pid}"


def rss_trail_key(heartbeat: str) -> str:
    """The RSS trail of the process whose heartbeat key is `heartbeat`: a JSON list of [epoch ms, RSS bytes],
    oldest first, rewritten only when a point is added (once a minute by default) and expiring with the beat."""
    return f"{heartbeat}:rss-trail"


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
    rss: int
    """Resident set size in bytes when the beat was written (0: unknown; absent from older pools' beats)."""
    cpu: float
    """CPU percent of one core since the previous beat (absent from older pools' beats)."""
    rssTrail: NotRequired[list[list[int]]]
    """Older pools' beats only: [epoch ms, RSS bytes] pairs, oldest first. Newer pools write the trail under
    `rss_trail_key` (once a point is added, not with every beat); readers take it from there, else from here."""


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
