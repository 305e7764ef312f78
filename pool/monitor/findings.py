"""What is wrong right now, and why: the one rule set behind ma-top's badges and findings pane, `ma-top --once
[--json]` and the exporter's `ma_finding`, so they never disagree. No Textual here.

`findings(snapshot, history, processes)` turns a snapshot (with the pool's counters of the last minutes, read
from Redis' `ma:recent:*` buckets, so every reader sees the same rate at once; what earlier snapshots said, kept
by the caller's `History`; and supervisord's processes when known) into `Finding`s, most severe first. Every rule
compares a current value or a rate over a recent window, never a lifetime counter, so a finding clears by itself
on the first snapshot after its cause is gone (a rate: once the window holds no more events).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence

from pool.contracts import RECENT_BUCKET_S
from pool.monitor.finding import BADGES, SEVERITIES, SUPERVISORCTL, Finding, Severity, Thresholds, age, clock
from pool.monitor.history import History
from pool.monitor.rates import MIN_SPAN_S, backlog_samples, net_rate
from pool.monitor.recent import RecentCounts
from pool.monitor.rules_process import no_handler, no_workers
from pool.monitor.rules_schedulers import scheduler_missed
from pool.monitor.rules_signals import downstream, failure_growing, long_running, memory_growth
from pool.monitor.snapshot import QueueStats, Snapshot
from pool.monitor.supervisor_source import ProcessInfo
from pool.queue_table import QUEUES

__all__ = ["BADGES", "SEVERITIES", "Finding", "History", "Thresholds", "as_text", "badges", "findings"]

DEFAULT_THRESHOLDS = Thresholds()  # frozen, so one shared default is safe
TABLE_QUEUES = frozenset(QUEUES)
"""The queues the pool's queue table handles."""


def findings(
    snapshot: Snapshot,
    history: History,
    processes: Sequence[ProcessInfo] | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    *,
    queue_names: Collection[str] = TABLE_QUEUES,
) -> list[Finding]:
    """Everything wrong in `snapshot`, most severe first. Records the snapshot in `history` (once per snapshot).

    `processes`: supervisord's processes, to say why a queue has no worker; None when supervisord is not read.
    `queue_names`: the queue table's names, what a pool handles (near-miss names are matched against them).
    """
    history.record(snapshot)
    found = [*_redis(snapshot, history, thresholds)]
    for q in snapshot.queues:
        found.extend(_queue(q, snapshot.recent, processes, thresholds, queue_names))
    found.extend(memory_growth(snapshot, history, thresholds))
    for d in snapshot.downstreams:
        found.extend(downstream(d, thresholds))
    found.extend(failure_growing(snapshot, thresholds))
    found.extend(scheduler_missed(snapshot))
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(found, key=lambda f: rank[f.severity])  # stable: within a severity, Redis then queue order


def badges(found: Iterable[Finding], queue: str) -> list[str]:
    """The badges of one queue's row, in a fixed order."""
    kinds = {f.kind for f in found if f.subject == queue}
    return [badge for kind, badge in BADGES.items() if kind in kinds]


def as_text(found: Sequence[Finding]) -> str:
    """The findings block of `ma-top --once`."""
    return "\n".join(["findings:", *(f"  {f.line()}" for f in found)] if found else ["findings: none"])


def _redis(snapshot: Snapshot, history: History, t: Thresholds) -> Iterator[Finding]:
    health = snapshot.redis
    if not health.up or "redis" in snapshot.errors:
        since = history.redis_down_since or snapshot.taken_at
        last = f"; last answered {clock(history.redis_last_up)}" if history.redis_last_up else ""
        yield Finding(
            "critical",
            "redis-down",
            "redis",
            f"Redis unreachable since {clock(since)} ({age(snapshot.taken_at - since)}){last}",
            snapshot.errors.get("redis") or health.error or "no answer",
            "redis-cli -u $REDIS_URL ping; slots retry with backoff and jobs wait until it is back",
            goto="redis",
        )
        return
    if health.maxmemory and health.used_memory - health.not_counted_for_evict > health.maxmemory:
        # Redis' own test before a write that may grow memory: over it, every such write (a job's add, fetch,
        # completion, the pool's heartbeats) is answered with an OOM error, unless eviction frees room first.
        yield Finding(
            "critical",
            "redis-full",
            "redis",
            f"Redis is full: writes refused (OOM){'' if health.policy == 'noeviction' else ' unless keys evicted'}",
            f"used {health.used_memory / 2**20:.1f} MiB > maxmemory {health.maxmemory / 2**20:.1f} MiB "
            f"({health.policy or 'policy unknown'}): producers' adds fail, slots cannot fetch or complete jobs; "
            "queued jobs stay queued",
            "free memory: redis-cli config set maxmemory <higher>, or remove finished jobs (ma-top 4); "
            "slots resume by themselves",
            goto="redis",
        )
    elif health.maxmemory and health.used_memory > health.maxmemory * t.redis_memory_pct / 100:
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
        yield no_handler(q, waiting, queue_names)
    elif waiting and not q.workers:
        yield no_workers(q, waiting, processes)
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
    yield from long_running(q, t)
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
            f"{increase.events} {kind} in the last {age(increase.span_s)} ({rate:.1f}/min > {threshold:g}/min)",
            action,
            goto=f"events:retry {q.name}" if kind == "retries" else f"events:{kind} {q.name}",
        )


def _backlog_growing(q: QueueStats, recent: RecentCounts, t: Thresholds) -> Iterator[Finding]:
    """Arrivals above departures over the window, from the backlog samples the pool writes into the recent
    buckets (so a one-shot reader sees the trend too). The drain ETA at that net rate is ∞."""
    samples = backlog_samples(recent, q.name)
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
        f"backlog {first.backlog} → {samples[-1].backlog} in the last {age(rates.span_s)} "
        f"(+{rates.net_per_min:.1f}/min > {t.backlog_growth_per_min:g}/min), workers {q.workers}",
        f"ma-top 1 (throttled? retries? paused?) and 3 (processes); more slots: "
        f"MA_PROCS_{q.name.upper().replace('-', '_').replace('.', '_')}, {SUPERVISORCTL} update",
    )
