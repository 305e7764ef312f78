"""What is wrong right now, and why: the one rule set behind ma-top's badges and findings pane, `ma-top --once
[--json]` and the exporter's `ma_finding`, so they never disagree. No Textual here.

`findings(snapshot, history, processes)` turns a snapshot (with the pool's counters of the last minutes, read
from Redis' `ma:recent:*` buckets, so every reader sees the same rate at once; what earlier snapshots said, kept
by the caller's `History`; and supervisord's processes when known) into `Finding`s, most severe first. Every rule
compares a current value or a rate over a recent window, never a lifetime counter, so a finding clears by itself
on the first snapshot after its cause is gone (a rate: once the window holds no more events).
"""

from __future__ import annotations

import difflib
import os
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Literal

from pool.contracts import RECENT_BUCKET_S
from pool.monitor.collector import QueueStats, Snapshot
from pool.monitor.downstreams import DownstreamStats
from pool.monitor.history import History
from pool.monitor.memory import STEPS, growth
from pool.monitor.rates import MIN_SPAN_S, Sample, net_rate
from pool.monitor.recent import RecentCounts
from pool.monitor.supervisor_source import ProcessInfo, endpoint_label
from pool.queue_table import QUEUES

__all__ = ["BADGES", "Finding", "History", "Thresholds", "as_text", "badges", "findings"]

Severity = Literal["critical", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("critical", "warning", "info")

BADGES = {
    "no-workers": "NO WORKERS",
    "backlog": "BACKLOG",
    "backlog-growing": "GROWING",
    "retries": "RETRIES",
    "stalled": "STALLED",
    "throttled": "THROTTLED",
    "rate-limited": "RATE LIMITED",
    "no-handler": "NO HANDLER",
    "paused": "PAUSED",
    "long-running": "LONG JOB",
    "failure-growing": "FAILING",
    "duplicates": "DUPLICATES",
}
"""Queue finding kind -> the badge on ma-top's queues view, in the order badges are shown."""

SUPERVISORCTL = "supervisorctl -c supervisord.conf"
RESTART_LOOP_S = 300
"""A process that exited this recently and runs again without a heartbeat may be looping: the finding says so."""
TABLE_QUEUES = frozenset(QUEUES)
"""The queues the pool's queue table handles."""


@dataclass(frozen=True)
class Finding:
    severity: Severity
    kind: str
    subject: str
    """The queue, process or host it is about (`redis` for Redis itself)."""
    cause: str
    """One line: what is wrong and why."""
    evidence: str
    """The figures it was decided on."""
    action: str
    """The ma-top key and the command that act on it."""
    goto: str = ""
    """Where ma-top shows the evidence, as `<view>` or `<view>:<target>` (enter on the finding goes there):
    `queue:<name>` (its jobs), `process:<group>` (processes view, cursor on it), `events:<filter>`,
    `failures:<queue>`, `redis`, `bulk`, `job:<queue>:<id>`. Empty: the subject's row in the queues view."""

    def line(self) -> str:
        return f"{self.severity.upper():8} {self.subject}: {self.cause} [{self.evidence}] -> {self.action}"


@dataclass(frozen=True)
class Thresholds:
    """Where a finding starts; each field is read from `MA_TOP_<FIELD>` (e.g. MA_TOP_RETRIES_PER_MIN)."""

    billing_usage_backlog: int = 300
    """billing-usage jobs waiting (the runbook's "more than a few hundred"; Prometheus MaBillingUsageBacklog)."""
    retries_per_min: float = 5.0
    """Retried attempts per minute, any queue (Prometheus MaPaymentSyncRetriesHigh: > 5/min)."""
    stalled_per_min: float = 0.0
    """Stalled jobs per minute: by default any stall within the window."""
    throttled_per_min: float = 0.0
    """Identity 429s per minute: by default any within the window (Prometheus MaIdentityThrottling: > 0)."""
    redis_memory_pct: float = 80.0
    """Redis used_memory as a percentage of maxmemory (when maxmemory is set)."""
    rate_window_s: float = 300.0
    """The window the per-minute rates are taken over."""
    backlog_growth_per_min: float = 1.0
    """A backlog growing faster than this (arrivals minus departures, per minute, over the rate window, and still
    growing over its last third) is a finding."""
    backlog_growth_min: int = 20
    """...and only once it grew by at least this many jobs (a handful more is noise, not an incident)."""
    rss_growth_pct: float = 20.0
    """RSS growth over `rss_growth_window_s`, in percent, above which steady growth is a memory-growth finding."""
    rss_growth_window_s: float = 900.0
    """The window RSS growth is judged over (at most the hour of RSS kept)."""
    rss_warmup_s: float = 120.0
    """Seconds of a process's life before its RSS is judged (start-up imports and first jobs fill memory)."""
    downstream_errors_per_min: float = 1.0
    """A downstream's 5xx answers, timeouts and connection errors per minute over the rate window (whole
    minutes: the pool counts them by the minute)."""
    failure_group_growth: int = 10
    """Jobs failed with one signature within the rate window (final failures; a retried attempt is `retries`)."""
    long_running_s: float = 600.0
    """An active job running longer than this (a queue table's `long_running_s` wins for its queue)."""

    def __post_init__(self) -> None:
        # at least one bucket of the recent counts; at most the 15 minutes of failed jobs and downstream minutes read
        if not 10 <= self.rate_window_s <= 900:
            raise ValueError(f"MA_TOP_RATE_WINDOW_S={self.rate_window_s:g} is not between 10 and 900 seconds")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Thresholds:
        """ValueError naming the variable when one is malformed."""
        values: dict[str, float] = {}
        for f in fields(cls):
            name = f"MA_TOP_{f.name.upper()}"
            if name in env:
                try:
                    values[f.name] = int(env[name]) if f.type == "int" else float(env[name])
                except ValueError:
                    raise ValueError(f"{name}={env[name]!r} is not a number") from None
        return cls(**values)  # type: ignore[arg-type]


def findings(
    snapshot: Snapshot,
    history: History,
    processes: Sequence[ProcessInfo] | None = None,
    thresholds: Thresholds = Thresholds(),  # frozen, so one shared default is safe
    *,
    queue_names: Collection[str] = TABLE_QUEUES,
) -> list[Finding]:
    """Everything wrong in `snapshot`, most severe first. Records the snapshot in `history` (once per snapshot).

    `processes`: supervisord's processes, to say why a queue has no worker; None when supervisord is not read.
    `queue_names`: the queue table's names, what a pool handles (near-miss names are matched against them).
    """
    history.keep_s = max(history.keep_s, thresholds.rate_window_s)  # keep at least the window the rates need
    history.record(snapshot)
    found = [*_redis(snapshot, history, thresholds)]
    for q in snapshot.queues:
        found.extend(_queue(q, snapshot.recent, processes, thresholds, queue_names))
    found.extend(_memory_growth(snapshot, history, thresholds))
    for d in snapshot.downstreams:
        found.extend(_downstream(d, thresholds))
    found.extend(_failure_growing(snapshot, thresholds))
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(found, key=lambda f: rank[f.severity])  # stable: within a severity, Redis then queue order


def badges(found: Iterable[Finding], queue: str) -> list[str]:
    """The badges of one queue's row, in a fixed order."""
    kinds = {f.kind for f in found if f.subject == queue}
    return [badge for kind, badge in BADGES.items() if kind in kinds]


def as_text(found: Sequence[Finding]) -> str:
    """The findings block of `ma-top --once`."""
    return "\n".join(["findings:", *(f"  {f.line()}" for f in found)] if found else ["findings: none"])


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def _age(seconds: float) -> str:
    """42s, 3m, 3m05s, 1h, 1h05m: a duration an on-call engineer reads at a glance, never rounded up."""
    s = int(max(0.0, seconds))
    for big, small, size in (("h", "m", 3600), ("m", "s", 60)):
        if s >= size:
            rest = s % size // (60 if big == "h" else 1)
            return f"{s // size}{big}" + (f"{rest:02d}{small}" if rest else "")
    return f"{s}s"


def _redis(snapshot: Snapshot, history: History, t: Thresholds) -> Iterator[Finding]:
    health = snapshot.redis
    if not health.up or "redis" in snapshot.errors:
        since = history.redis_down_since or snapshot.taken_at
        last = f"; last answered {_clock(history.redis_last_up)}" if history.redis_last_up else ""
        yield Finding(
            "critical",
            "redis-down",
            "redis",
            f"Redis unreachable since {_clock(since)} ({_age(snapshot.taken_at - since)}){last}",
            snapshot.errors.get("redis") or health.error or "no answer",
            "redis-cli -u $REDIS_URL ping; slots retry with backoff and jobs wait until it is back",
            goto="redis",
        )
        return
    if health.maxmemory and health.used_memory > health.maxmemory * t.redis_memory_pct / 100:
        pct = health.used_memory / health.maxmemory * 100
        yield Finding(
            "critical" if pct >= 95 else "warning",
            "redis-memory",
            "redis",
            f"Redis memory at {pct:.0f}% of maxmemory: writes fail when it is full",
            f"used {health.used_memory / 2**20:.0f} MiB of {health.maxmemory / 2**20:.0f} MiB "
            f"(> {t.redis_memory_pct:.0f}%)",
            "ma-top 4; drain backlogs or raise maxmemory (redis-cli config set maxmemory ...)",
            goto="redis",
        )
    if health.policy and health.policy != "noeviction":
        yield Finding(
            "critical",
            "eviction-policy",
            "redis",
            f"maxmemory-policy is {health.policy}: Redis may evict job keys and BullMQ loses those jobs",
            f"maxmemory-policy {health.policy}, evicted keys {health.evicted_keys}",
            "ma-top 4; redis-cli config set maxmemory-policy noeviction",
            goto="redis",
        )


def _queue(
    q: QueueStats,
    recent: RecentCounts,
    processes: Sequence[ProcessInfo] | None,
    t: Thresholds,
    queue_names: Collection[str],
) -> Iterator[Finding]:
    waiting = q.counts["waiting"] + q.counts["prioritized"]
    handled = q.handled or q.name in queue_names
    if not handled and (waiting or q.counts["delayed"]):
        yield _no_handler(q, waiting, queue_names)
    elif waiting and not q.workers:
        yield _no_workers(q, waiting, processes)
    if q.name == "billing-usage" and waiting > t.billing_usage_backlog:
        yield Finding(
            "warning",
            "backlog",
            q.name,
            "backlog above the runbook's threshold (identity throttling? too few slots?)",
            f"waiting {waiting} > {t.billing_usage_backlog}, workers {q.workers}",
            f"ma-top 2 (throttled lines?); more slots: MA_PROCS_BILLING_USAGE, {SUPERVISORCTL} update",
            goto=f"events:{q.name}",
        )
    yield from _rates(q, recent, t)
    yield from _backlog_growing(q, recent, t)
    yield from _long_running(q, t)
    if q.rate_limited_ms > 0 and waiting:
        yield Finding(
            "info",
            "rate-limited",
            q.name,
            f"rate limiter window open: resets in {q.rate_limited_ms / 1000:.1f}s with jobs waiting",
            f"limiter ttl {q.rate_limited_ms} ms, waiting {waiting}",
            "clears when the limiter key expires; the limit is the queue table's `limiter`",
        )
    if q.paused:
        yield Finding(
            "warning" if waiting else "info",
            "paused",
            q.name,
            "paused: no job starts until it is resumed",
            f"paused, waiting {waiting}",
            "ma-top 1, space on the queue resumes it (journaled)",
        )


RATES: tuple[tuple[str, str, Severity, str, str], ...] = (
    # kind (= counter), threshold field, severity, what an event is, what to do
    (
        "retries",
        "retries_per_min",
        "warning",
        "attempts failing and retried",
        "ma-top 2 (events: retry, with each attempt's reason); billing-payment-sync: check Stripe status",
    ),
    (
        "stalled",
        "stalled_per_min",
        "warning",
        "jobs stalled (lock lost: a slot killed or its event loop blocked) and re-run",
        f"ma-top 2 (events: stalled), 3 (processes: restarts); {SUPERVISORCTL} status",
    ),
    (
        "throttled",
        "throttled_per_min",
        "info",
        "jobs deferred by identity 429s (no attempt burned)",
        "ma-top 2 (events: throttled); identity's IDENTITY_RATE_LIMIT_MAX/TIME_WINDOW, stagger backfills",
    ),
)


def _rates(q: QueueStats, recent: RecentCounts, t: Thresholds) -> Iterator[Finding]:
    for kind, field, severity, what, action in RATES:
        threshold = float(getattr(t, field))
        increase = recent.increase(q.name, kind, t.rate_window_s)
        if not increase.events or increase.per_min() <= threshold:
            continue
        rate = increase.per_min()
        yield Finding(
            severity,
            kind,
            q.name,
            f"{what}: {rate:.1f}/min",
            f"{increase.events} {kind} in the last {_age(increase.span_s)} ({rate:.1f}/min > {threshold:g}/min)",
            action,
            goto=f"events:retry {q.name}" if kind == "retries" else f"events:{kind} {q.name}",
        )


def _backlog_growing(q: QueueStats, recent: RecentCounts, t: Thresholds) -> Iterator[Finding]:
    """Arrivals above departures over the window, from the backlog samples the pool writes into the recent
    buckets (so a one-shot reader sees the trend too). The drain ETA at that net rate is ∞."""
    points = recent.gauges(q.name, "backlog", "completed_total", "failed_total")
    samples = [Sample(at, *values) for at, values in points]
    rates = net_rate(samples, t.rate_window_s, min(MIN_SPAN_S * 4, t.rate_window_s / 2))
    if rates is None or rates.net_per_min <= t.backlog_growth_per_min:
        return
    first = next(s for s in samples if s.at >= samples[-1].at - t.rate_window_s)
    growth = samples[-1].backlog - first.backlog
    recent_part = net_rate(samples, rates.span_s / 3, RECENT_BUCKET_S)
    if growth < t.backlog_growth_min or recent_part is None or recent_part.net_per_min <= 0:
        return  # a burst that is already draining is no trend
    yield Finding(
        "warning",
        "backlog-growing",
        q.name,
        f"backlog growing: {rates.arrivals_per_min:.0f}/min arrive, {rates.departures_per_min:.0f}/min "
        "finish; at this rate it never drains (ETA ∞)",
        f"backlog {first.backlog} → {samples[-1].backlog} in the last {_age(rates.span_s)} "
        f"(+{rates.net_per_min:.1f}/min > {t.backlog_growth_per_min:g}/min), workers {q.workers}",
        f"ma-top 1 (throttled? retries? paused?) and 3 (processes); more slots: "
        f"MA_PROCS_{q.name.upper().replace('-', '_').replace('.', '_')}, {SUPERVISORCTL} update",
    )


def _no_handler(q: QueueStats, waiting: int, queue_names: Collection[str]) -> Finding:
    near = difflib.get_close_matches(q.name, list(queue_names), n=1, cutoff=0.8)
    hint = f"; did you mean `{near[0]}`?" if near else ""
    return Finding(
        "warning",
        "no-handler",
        q.name,
        f"jobs on a queue no pool handles{hint}",
        f"waiting {waiting}, delayed {q.counts['delayed']}, not in the queue table",
        f"fix the producer's queue name to `{near[0]}`"
        if near
        else "register a handler (CONTRIBUTING: Adding a product queue) or fix the producer's queue name",
        goto=f"queue:{q.name}",
    )


def _no_workers(q: QueueStats, waiting: int, processes: Sequence[ProcessInfo] | None) -> Finding:
    oldest = f", oldest {_age(q.oldest_waiting_s)}" if q.oldest_waiting_s is not None else ""
    evidence = f"waiting {waiting}{oldest}, 0 heartbeats"
    why, action = _why_no_worker(q.name, processes)
    return Finding(
        "critical", "no-workers", q.name, f"no worker: {why}", evidence, action, goto=f"process:{q.name}"
    )


def _why_no_worker(queue: str, processes: Sequence[ProcessInfo] | None) -> tuple[str, str]:
    status = f"ma-top 3 (processes); {SUPERVISORCTL} status {queue}:*"
    if processes is None:
        return "no slot's heartbeat in Redis", status
    mine = [p for p in processes if p.group == queue]
    if not mine:
        hosts = ", ".join(sorted({endpoint_label(p.endpoint) for p in processes})) or "none"
        return (
            f"no supervisord program `{queue}` on any host read ({hosts})",
            f"add [program:{queue}] to supervisord.conf, then {SUPERVISORCTL} update",
        )
    broken = [p for p in mine if p.state in ("FATAL", "BACKOFF")]
    if broken:
        p = broken[0]
        detail = p.spawnerr or p.description
        exit_status = f"exit status {p.exitstatus}, " if p.exitstatus else ""
        return (
            f"{len(broken)} of {len(mine)} process(es) {p.state} on {endpoint_label(p.endpoint)} "
            f"({exit_status}{detail})",
            f"ma-top 3, l on {p.full_name} (log tail), a to start; {SUPERVISORCTL} tail {p.full_name}",
        )
    crashed = [p for p in mine if p.state == "EXITED" and p.exitstatus]
    if crashed:  # exited unexpectedly; supervisord restarts it (autorestart) until `startretries` runs out
        p = crashed[0]
        return (
            f"{len(crashed)} of {len(mine)} process(es) on {endpoint_label(p.endpoint)} exited "
            f"(exit status {p.exitstatus}) {_age(p.now - p.stop)} ago",
            f"ma-top 3, l on {p.full_name} (log tail); {SUPERVISORCTL} tail {p.full_name}",
        )
    restarted = [
        p
        for p in mine
        if p.state in ("STARTING", "RUNNING") and 0 < p.stop <= p.start and p.now - p.stop <= RESTART_LOOP_S
    ]
    if restarted:  # supervisord clears the exit status on a restart: what is left is the time of the exit
        p = max(restarted, key=lambda p: p.stop)
        return (
            f"{len(restarted)} of {len(mine)} process(es) on {endpoint_label(p.endpoint)} exited "
            f"{_age(p.now - p.stop)} ago and restarted, no heartbeat yet (now {p.state}): a restart loop if "
            "it lasts",
            f"ma-top 3, l on {p.full_name} (log tail); {SUPERVISORCTL} tail {p.full_name}",
        )
    stopped = [p for p in mine if p.state in ("STOPPED", "EXITED", "STOPPING")]
    if len(stopped) == len(mine):
        hosts = ", ".join(sorted({endpoint_label(p.endpoint) for p in stopped}))
        return (
            f"{len(stopped)} process(es) {stopped[0].state} on {hosts}",
            f"ma-top 3, a on the process; {SUPERVISORCTL} start {queue}:*",
        )
    states = ", ".join(sorted({p.state for p in mine}))
    return (
        f"{len(mine)} process(es) {states} but no heartbeat (still starting, or cannot reach Redis)",
        f"ma-top 3, l (log tail); {SUPERVISORCTL} tail {mine[0].full_name}",
    )


def _memory_growth(snapshot: Snapshot, history: History, t: Thresholds) -> Iterator[Finding]:
    """Steady RSS growth of a live process (pool/monitor/memory.py says what steady is)."""
    history.memory.keep_s = max(
        history.memory.keep_s, t.rss_growth_window_s + 60
    )  # a point before the window
    for beat in snapshot.workers:
        series = history.memory.of(beat)
        g = growth(series, t.rss_growth_window_s, t.rss_warmup_s) if series else None
        if series is None or g is None or not g.steady or g.pct <= t.rss_growth_pct:
            continue
        supervised = ":" in beat.process  # supervisord's `group:name`; a slot run by hand has no such name
        group = beat.process.split(":")[0] if supervised else beat.queue
        yield Finding(
            "warning",
            "memory-growth",
            series.label,
            f"RSS grew {g.pct:.0f}% in {_age(g.span_s)} and is still growing (a leak, or a job holding memory)",
            f"rss {g.start_rss / 2**20:.0f} -> {g.end_rss / 2**20:.0f} MiB, {g.rising} of {STEPS} steps up "
            f"(> {t.rss_growth_pct:g}% in {_age(t.rss_growth_window_s)})",
            f"ma-top 3 (rss sparkline); {SUPERVISORCTL} restart {beat.process if supervised else group + ':*'} "
            "once its jobs are done",
            goto=f"process:{group}",
        )


DOWNSTREAM_ACTIONS = {
    "identity": "ma-top 2 (events: the failing jobs); check identity's health and logs; jobs retry with backoff",
    "supabase": "ma-top 2; check Supabase's status and SUPABASE_URL / SUPABASE_SERVICE_ROLE_KEY; jobs retry",
    "stripe": "ma-top 2; check status.stripe.com; payment syncs retry with backoff and catch up",
    "postgres": "ma-top 2; check both databases are reachable (DATABASE_URL, TASKS_DATABASE_URL), connections",
}
OUTCOME_WORDS = {"5xx": "× 5xx", "timeout": "timeouts", "connection-error": "connection errors"}


def _downstream(d: DownstreamStats, t: Thresholds) -> Iterator[Finding]:
    """A downstream answering 5xx, timing out or refusing connections over the window (the pool counts each
    request by the minute, so this needs no history: `ma-top --once` says the same)."""
    window = d.window(t.rate_window_s)
    errors = window.failures
    if not errors or window.per_min(errors) <= t.downstream_errors_per_min:
        return
    figures = ", ".join(
        f"{n} {OUTCOME_WORDS[o]}"
        for o in ("5xx", "timeout", "connection-error")
        if (n := window.counts.get(o))
    )
    others = ", ".join(
        f"{window.counts[o]} {o}" for o in ("ok", "429", "4xx", "error") if window.counts.get(o)
    )
    rate = window.per_min(errors)
    yield Finding(
        "critical" if not window.counts.get("ok") else "warning",
        "downstream-failing",
        d.name,
        f"{d.name} failing: {errors} failed requests in the last {_age(window.span_s)} ({rate:.1f}/min)",
        f"{d.name}: {figures} in the last {_age(window.span_s)}; {others or '0 ok'}"
        f" (> {t.downstream_errors_per_min:g}/min)",
        DOWNSTREAM_ACTIONS.get(d.name, "ma-top 2 (events)"),
        # identity's reasons name it; the others' do not, so their evidence is the retried attempts' reasons
        goto="events:retry identity" if d.name == "identity" else "events:retry",
    )


def _long_running(q: QueueStats, t: Thresholds) -> Iterator[Finding]:
    spec = QUEUES.get(q.name)
    limit = spec.long_running_s if spec is not None and spec.long_running_s else t.long_running_s
    over = [j for j in q.oldest_active if j.running_s > limit]
    if not over:
        return
    job = over[0]
    more = f" (+{len(over) - 1} more)" if len(over) > 1 else ""
    yield Finding(
        "warning",
        "long-running",
        q.name,
        f"a job has been active for {_age(job.running_s)}{more}: hung on a downstream, or far more work than usual",
        f"{job.name}#{job.id} running {_age(job.running_s)} (> {_age(limit)})",
        f"enter: the job (progress, attempts); ma-top 3, l on its process (log tail); {SUPERVISORCTL} status",
        goto=f"job:{q.name}:{job.id}",
    )


def _failure_growing(snapshot: Snapshot, t: Thresholds) -> Iterator[Finding]:
    """A failure signature with at least the threshold's new failures within the window; the failed jobs were
    read on the collector's slower timer, and the window is counted back from now, so the finding clears once
    those failures are older than the window even before the next read."""
    now = snapshot.taken_at
    for g in snapshot.recent_failures:
        n = g.within(now, t.rate_window_s)
        if n < t.failure_group_growth:
            continue
        at_least = "at least " if g.capped else ""
        frame = f" at {g.top_frame}" if g.top_frame else ""
        yield Finding(
            "warning",
            "failure-growing",
            g.queue,
            f"{at_least}{n} jobs failed with one signature in the last {_age(t.rate_window_s)}: {g.signature}",
            f"{at_least}{n} new{frame} (>= {t.failure_group_growth}), last {_age(now - g.failed_at[0])} ago, "
            f"e.g. #{g.ids[0]}: {g.example[:120]}",
            "ma-top 5 (failures by signature; R requeues the group once the cause is fixed)",
            goto=f"failures:{g.queue}",
        )
