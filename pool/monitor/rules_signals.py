"""The rules about what the pool's work meets: memory growth of a process, a downstream failing, a job running
long, one failure signature growing. Part of `pool.monitor.findings`' rule set.
"""

from __future__ import annotations

from collections.abc import Iterator

from pool.monitor.downstreams import DownstreamStats
from pool.monitor.finding import SUPERVISORCTL, Finding, Thresholds, age
from pool.monitor.history import History
from pool.monitor.memory import STEPS, growth
from pool.monitor.snapshot import QueueStats, Snapshot
from pool.queue_table import QUEUES


def memory_growth(snapshot: Snapshot, history: History, t: Thresholds) -> Iterator[Finding]:
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
            f"RSS grew {g.pct:.0f}% in {age(g.span_s)} and is still growing (a leak, or a job holding memory)",
            f"rss {g.start_rss / 2**20:.0f} -> {g.end_rss / 2**20:.0f} MiB, {g.rising} of {STEPS} steps up "
            f"(> {t.rss_growth_pct:g}% in {age(t.rss_growth_window_s)})",
            f"ma-top 3 (rss sparkline); {SUPERVISORCTL} restart {beat.process if supervised else group + ':*'} "
            "once its jobs are done",
            goto=f"process:{group}",
        )


DOWNSTREAM_ACTIONS = {
    "identity": "ma-top 2 (events: the failing jobs); check identity's health and logs; jobs retry with backoff",
    "supabase": "ma-top 2; check Supabase's status and SUPABASE_URL / SUPABASE_SERVICE_ROLE_KEY; jobs retry",
    "stripe": "ma-top 2; check status.stripe.com; payment syncs retry with backoff and catch up",
    "postgres": "ma-top 2; check both databases are reachable (DATABASE_URL, TASKS_DATABASE_URL), connections"
    " (too many: SELECT usename, application_name, count(*) FROM pg_stat_activity GROUP BY 1, 2; each pool"
    " process holds up to 10 per database)",
}
OUTCOME_WORDS = {
    "5xx": "× 5xx",
    "timeout": "timeouts",
    "connection-error": "connection errors",
    "saturated": "refused: too many connections (max_connections)",
}


def downstream(d: DownstreamStats, t: Thresholds) -> Iterator[Finding]:
    """A downstream answering 5xx, timing out or refusing connections over the window (the pool counts each
    request by the minute, so this needs no history: `ma-top --once` says the same)."""
    window = d.window(t.rate_window_s)
    errors = window.failures
    if not errors or window.per_min(errors) <= t.downstream_errors_per_min:
        return
    figures = ", ".join(
        f"{n} {OUTCOME_WORDS[o]}"
        for o in ("saturated", "5xx", "timeout", "connection-error")
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
        f"{d.name} failing: {errors} failed requests in the last {age(window.span_s)} ({rate:.1f}/min)",
        f"{d.name}: {figures} in the last {age(window.span_s)}; {others or '0 ok'}"
        f" (> {t.downstream_errors_per_min:g}/min)",
        DOWNSTREAM_ACTIONS.get(d.name, "ma-top 2 (events)"),
        # identity's reasons name it; the others' do not, so their evidence is the retried attempts' reasons
        goto="events:retry identity" if d.name == "identity" else "events:retry",
    )


def long_running(q: QueueStats, t: Thresholds) -> Iterator[Finding]:
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
        f"a job has been active for {age(job.running_s)}{more}: hung on a downstream, or far more work than usual",
        f"{job.name}#{job.id} running {age(job.running_s)} (> {age(limit)})",
        f"enter: the job (progress, attempts); ma-top 3, l on its process (log tail); {SUPERVISORCTL} status",
        goto=f"job:{q.name}:{job.id}",
    )


def failure_growing(snapshot: Snapshot, t: Thresholds) -> Iterator[Finding]:
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
            f"{at_least}{n} jobs failed with one signature in the last {age(t.rate_window_s)}: {g.signature}",
            f"{at_least}{n} new{frame} (>= {t.failure_group_growth}), last {age(now - g.failed_at[0])} ago, "
            f"e.g. #{g.ids[0]}: {g.example[:120]}",
            "ma-top 5 (failures by signature; R requeues the group once the cause is fixed)",
            goto=f"failures:{g.queue}",
        )
