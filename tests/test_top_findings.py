"""The findings' rules (pool/monitor/findings.py) on constructed snapshots and histories, no engines: each kind
appears with its cause, and clears by itself when the cause is gone."""

from __future__ import annotations

import dataclasses

import pytest

from pool.contracts import RECENT_BUCKET_S
from pool.monitor.findings import BADGES, Finding, History, Thresholds, as_text, badges, findings
from pool.monitor.recent import RecentCounts
from pool.monitor.snapshot import QueueStats, RedisHealth, Snapshot
from tests.support.fake_source import T0, process, queue_stats

UP = RedisHealth(True, used_memory=10 * 2**20, maxmemory=0, policy="noeviction")
SOCK = "unix:///srv/host-a/var/supervisor.sock"


def snap(*queues: QueueStats, at: float = T0, redis: RedisHealth = UP, errors=None) -> Snapshot:
    return Snapshot(at, queues, (), redis, errors or {})


def with_counters(q: QueueStats, **counters: int) -> QueueStats:
    return dataclasses.replace(q, counters=counters)


def kinds(found: list[Finding]) -> list[tuple[str, str]]:
    return [(f.kind, f.subject) for f in found]


def one(found: list[Finding], kind: str) -> Finding:
    matching = [f for f in found if f.kind == kind]
    assert len(matching) == 1, kinds(found)
    return matching[0]


def test_a_healthy_system_has_no_findings():
    q = queue_stats("identity-events", waiting=3, workers=1)
    assert findings(snap(q), History()) == []


# -- no workers ----------------------------------------------------------------------------------------------


def test_waiting_jobs_without_a_heartbeat_are_a_critical_no_workers_finding_and_a_worker_clears_it():
    history = History()
    found = findings(snap(queue_stats("identity-events", waiting=4, workers=0)), history)
    f = one(found, "no-workers")
    assert (f.severity, f.subject) == ("critical", "identity-events")
    assert "waiting 4" in f.evidence and "0 heartbeats" in f.evidence
    assert "ma-top 3" in f.action and "supervisorctl -c supervisord.conf status identity-events:*" in f.action
    assert findings(snap(queue_stats("identity-events", waiting=4, workers=1), at=T0 + 1), history) == []
    prioritized = queue_stats("identity-events", prioritized=1, workers=0)
    assert kinds(findings(snap(prioritized), History())) == [("no-workers", "identity-events")]
    delayed_only = queue_stats("identity-events", delayed=5, workers=0)
    assert findings(snap(delayed_only), History()) == []


def test_no_workers_says_the_programs_are_fatal_with_their_exit_status():
    fatal = dataclasses.replace(
        process(SOCK, "identity-events", 0, 0, "FATAL"),
        exitstatus=78,
        spawnerr="Exited too quickly (process log may have details)",
    )
    found = findings(snap(queue_stats("identity-events", waiting=1, workers=0)), History(), [fatal])
    f = one(found, "no-workers")
    assert "1 of 1 process(es) FATAL on host-a" in f.cause and "exit status 78" in f.cause
    assert "Exited too quickly" in f.cause
    assert "tail identity-events:identity-events_00" in f.action


def test_no_workers_says_the_programs_are_stopped():
    stopped = [process(SOCK, "billing-usage", n, 0, "STOPPED") for n in range(2)]
    f = one(
        findings(snap(queue_stats("billing-usage", waiting=1, workers=0)), History(), stopped), "no-workers"
    )
    assert "2 process(es) STOPPED on host-a" in f.cause
    assert "supervisorctl -c supervisord.conf start billing-usage:*" in f.action


def test_no_workers_says_when_no_host_read_has_the_program():
    others = [process(SOCK, "billing-usage", 0, 41)]
    f = one(
        findings(snap(queue_stats("identity-events", waiting=1, workers=0)), History(), others), "no-workers"
    )
    assert "no supervisord program `identity-events` on any host read (host-a)" in f.cause
    assert "[program:identity-events]" in f.action


def test_no_workers_with_running_processes_says_they_do_not_beat():
    running = [process(SOCK, "identity-events", 0, 41)]
    f = one(
        findings(snap(queue_stats("identity-events", waiting=1, workers=0)), History(), running), "no-workers"
    )
    assert "RUNNING but no heartbeat" in f.cause


# -- Redis ---------------------------------------------------------------------------------------------------


def test_redis_down_says_since_when_and_clears_when_it_answers():
    history = History()
    findings(snap(), history)
    down = RedisHealth(False, error="ConnectionError: refused")
    findings(snap(at=T0 + 10, redis=down, errors={"redis": "ConnectionError: refused"}), history)
    found = findings(snap(at=T0 + 130, redis=down, errors={"redis": "ConnectionError: refused"}), history)
    f = one(found, "redis-down")
    assert f.severity == "critical" and f.subject == "redis"
    assert "(2m)" in f.cause and "last answered" in f.cause and "ConnectionError" in f.evidence
    assert findings(snap(at=T0 + 140), history) == []
    assert history.redis_down_since is None


def test_redis_memory_above_80_percent_of_maxmemory_only_when_maxmemory_is_set():
    full = dataclasses.replace(UP, used_memory=850 * 2**20, maxmemory=1000 * 2**20)
    f = one(findings(snap(redis=full), History()), "redis-memory")
    assert f.severity == "warning" and "85%" in f.cause
    assert findings(snap(redis=dataclasses.replace(full, used_memory=700 * 2**20)), History()) == []
    assert findings(snap(redis=dataclasses.replace(full, maxmemory=0)), History()) == []
    brim = dataclasses.replace(full, used_memory=990 * 2**20)
    assert one(findings(snap(redis=brim), History()), "redis-memory").severity == "critical"


def test_an_eviction_policy_other_than_noeviction_is_critical():
    f = one(findings(snap(redis=dataclasses.replace(UP, policy="allkeys-lru")), History()), "eviction-policy")
    assert f.severity == "critical" and "allkeys-lru" in f.cause and "noeviction" in f.action


# -- queue state ---------------------------------------------------------------------------------------------


def test_a_paused_queue_is_a_finding_until_resumed():
    paused = queue_stats("identity-events", paused=True, waiting=2)
    f = one(findings(snap(paused), History()), "paused")
    assert f.severity == "warning" and "space" in f.action
    assert findings(snap(dataclasses.replace(paused, paused=False)), History()) == []


def test_rate_limited_with_jobs_waiting_shows_the_remaining_ttl():
    limited = dataclasses.replace(queue_stats("billing-usage", waiting=9), rate_limited_ms=4200)
    f = one(findings(snap(limited), History()), "rate-limited")
    assert "4.2s" in f.cause and f.severity == "info"
    assert findings(snap(dataclasses.replace(limited, rate_limited_ms=0)), History()) == []


def test_billing_usage_backlog_above_its_threshold_only():
    assert findings(snap(queue_stats("billing-usage", waiting=300)), History()) == []
    f = one(findings(snap(queue_stats("billing-usage", waiting=301)), History()), "backlog")
    assert "301 > 300" in f.evidence
    assert findings(snap(queue_stats("billing-invoice", waiting=301)), History()) == []
    custom = Thresholds(billing_usage_backlog=10)
    assert kinds(findings(snap(queue_stats("billing-usage", waiting=11)), History(), None, custom)) == [
        ("backlog", "billing-usage")
    ]


def test_a_queue_no_pool_handles_says_did_you_mean_for_a_near_miss():
    typo = dataclasses.replace(queue_stats("billing-usgae", waiting=3, workers=0), handled=False)
    f = one(findings(snap(typo), History()), "no-handler")
    assert "did you mean `billing-usage`?" in f.cause and "billing-usage" in f.action
    assert "no-workers" not in [k for k, _ in kinds(findings(snap(typo), History()))], "the cause is the name"
    product = dataclasses.replace(queue_stats("product-x.jobs", delayed=1, workers=0), handled=False)
    g = one(findings(snap(product), History()), "no-handler")
    assert "did you mean" not in g.cause and "Adding a product queue" in g.action
    assert (
        findings(snap(dataclasses.replace(product, counts={**product.counts, "delayed": 0})), History()) == []
    )


def test_a_table_queue_no_pool_ever_registered_is_handled_and_lacks_workers():
    never_started = dataclasses.replace(queue_stats("billing-usage", waiting=1, workers=0), handled=False)
    assert kinds(findings(snap(never_started), History())) == [("no-workers", "billing-usage")]


# -- rates from the cumulative counters ----------------------------------------------------------------------


def rated(
    name: str, events: list[tuple[float, str, int]], *, now: float = T0, window_s: float = 300
) -> Snapshot:
    """A snapshot of `name` with the pool's recent counts: (seconds before `now`, counter, increments)."""
    buckets: dict[int, dict[str, int]] = {}
    for ago, counter, n in events:
        bucket = buckets.setdefault(int(now - ago) // RECENT_BUCKET_S, {})
        bucket[f"{name}|{counter}"] = bucket.get(f"{name}|{counter}", 0) + n
    q = with_counters(
        queue_stats(name), retries=50_000, throttled=50_000, stalled=50_000
    )  # lifetime: ignored
    return dataclasses.replace(snap(q, at=now), recent=RecentCounts(now, window_s, buckets))


def test_retries_are_a_rate_over_the_window_and_clear_when_they_stop_though_the_lifetime_counter_stays_high():
    climbing = [(float(s), "retries", 1) for s in range(0, 180, 6)]  # 10/min over the last 3 minutes
    f = one(findings(rated("billing-payment-sync", climbing), History()), "retries")
    assert f.severity == "warning" and "6.0/min" in f.cause, f.cause  # 30 over the 5-minute window
    assert "30 retries in the last 5m" in f.evidence and "> 5/min" in f.evidence, f.evidence
    assert f.goto == "events:retry billing-payment-sync"
    later = [(ago + 301, c, n) for ago, c, n in climbing]  # the same retries, 5 minutes on
    assert findings(rated("billing-payment-sync", later), History()) == [], "no retry in the last 5 minutes"


def test_a_lifetime_counter_alone_is_no_finding():
    assert findings(rated("billing-payment-sync", []), History()) == []


def test_retries_at_or_below_the_threshold_are_no_finding():
    at_threshold = [(float(s), "retries", 1) for s in range(0, 300, 12)]  # 25 in 5 minutes: 5/min
    assert findings(rated("identity-events", at_threshold), History()) == []


def test_a_burst_just_now_is_read_over_the_whole_window_not_as_a_spike_per_second():
    assert findings(rated("identity-events", [(1, "retries", 3)]), History()) == [], "3 in 5 min: 0.6/min"
    f = one(findings(rated("identity-events", [(1, "retries", 40)]), History()), "retries")
    assert "8.0/min" in f.cause, f.cause


def test_any_stall_in_the_window_is_a_finding_until_the_window_passes():
    f = one(findings(rated("identity-events", [(30, "stalled", 1)]), History()), "stalled")
    assert f.severity == "warning" and "1 stalled in the last 5m" in f.evidence, f.evidence
    assert findings(rated("identity-events", [(280, "stalled", 1)]), History()), "still within the window"
    assert findings(rated("identity-events", [(320, "stalled", 1)]), History()) == []


def test_identity_throttling_is_a_rate_per_queue():
    f = one(
        findings(rated("billing-usage", [(s, "throttled", 10) for s in (5, 65, 125)]), History()), "throttled"
    )
    assert f.severity == "info" and "6.0/min" in f.cause and f.subject == "billing-usage"
    assert findings(rated("billing-usage", [(400, "throttled", 30)]), History()) == []


def test_recent_counts_sum_whole_buckets_of_the_window_and_a_longer_window_is_cut_to_what_was_read():
    recent = rated(
        "identity-events", [(0, "retries", 1), (95, "retries", 2), (125, "retries", 4)], window_s=120
    ).recent
    assert recent.increase("identity-events", "retries", 60).events == 1
    assert recent.increase("identity-events", "retries", 100).events == 3
    assert recent.increase("identity-events", "retries", 600).events == 3, "only 120 s were read"
    assert recent.increase("identity-events", "stalled", 120).events == 0
    assert 110 < recent.increase("identity-events", "retries", 120).span_s <= 120


def test_the_history_records_each_snapshot_once_and_when_redis_went_down():
    history = History()
    for s in (0, 10, 10, 5):  # the same snapshot again, and an older one, are no-ops
        findings(snap(queue_stats("identity-events"), at=T0 + s), history)
    assert history.redis_last_up == T0 + 10 and history.redis_down_since is None
    down = dataclasses.replace(snap(queue_stats("identity-events"), at=T0 + 20), redis=RedisHealth(False))
    findings(down, history)
    findings(dataclasses.replace(down, taken_at=T0 + 30), history)
    assert (history.redis_down_since, history.redis_last_up) == (T0 + 20, T0 + 10)
    findings(snap(queue_stats("identity-events"), at=T0 + 40), history)
    assert (history.redis_down_since, history.redis_last_up) == (None, T0 + 40)


# -- shared output -------------------------------------------------------------------------------------------


def test_most_severe_first_and_badges_in_their_fixed_order():
    q = dataclasses.replace(queue_stats("billing-usage", waiting=400, workers=0), paused=True)
    found = findings(snap(q, redis=dataclasses.replace(UP, policy="allkeys-lru")), History())
    assert [f.severity for f in found] == ["critical", "critical", "warning", "warning"]
    assert badges(found, "billing-usage") == ["NO WORKERS", "BACKLOG", "PAUSED"]
    assert badges(found, "identity-events") == []
    assert set(BADGES.values()) >= {"NO WORKERS", "BACKLOG", "RETRIES", "NO HANDLER", "PAUSED", "THROTTLED"}


def test_once_text_lists_each_finding_on_a_line():
    found = findings(snap(queue_stats("identity-events", waiting=1, workers=0)), History())
    text = as_text(found)
    assert text.startswith("findings:\n  CRITICAL identity-events: no worker: no slot's heartbeat")
    assert as_text([]) == "findings: none"


def test_thresholds_come_from_the_environment_with_the_runbook_defaults():
    assert Thresholds.from_env({}) == Thresholds()
    assert Thresholds().retries_per_min == 5 and Thresholds().billing_usage_backlog == 300
    env = {"MA_TOP_BILLING_USAGE_BACKLOG": "10", "MA_TOP_RETRIES_PER_MIN": "2.5"}
    assert Thresholds.from_env(env) == Thresholds(billing_usage_backlog=10, retries_per_min=2.5)
    with pytest.raises(ValueError, match="MA_TOP_STALLED_PER_MIN='x'"):
        Thresholds.from_env({"MA_TOP_STALLED_PER_MIN": "x"})


def test_no_workers_names_an_exit_status_and_a_restart_after_an_exit():
    q = queue_stats("identity-events", waiting=2, workers=0)
    exited = dataclasses.replace(
        process(SOCK, "identity-events", 0, 0, "EXITED"), exitstatus=78, stop=int(T0) - 20, now=int(T0)
    )
    f = one(findings(snap(q), History(), [exited]), "no-workers")
    assert "1 of 1 process(es) on host-a exited (exit status 78) 20s ago" in f.cause, f.cause
    assert "tail identity-events:" in f.action
    restarted = dataclasses.replace(exited, state="STARTING", exitstatus=0, start=int(T0) - 19)
    f = one(findings(snap(q), History(), [restarted]), "no-workers")
    assert "exited 20s ago and restarted, no heartbeat yet (now STARTING)" in f.cause, f.cause
    long_ago = dataclasses.replace(restarted, state="RUNNING", stop=int(T0) - 3600, start=int(T0) - 3599)
    f = one(findings(snap(q), History(), [long_ago]), "no-workers")
    assert "restarted" not in f.cause and "no heartbeat" in f.cause, "an exit an hour ago is no loop"


def backlog_series(name: str, points: list[tuple[float, int, int]], *, now: float = T0) -> Snapshot:
    """A snapshot whose recent buckets hold the pool's backlog samples: (seconds ago, backlog, completed)."""
    buckets: dict[int, dict[str, int]] = {}
    for ago, backlog, completed in points:
        buckets[int(now - ago) // RECENT_BUCKET_S] = {
            f"{name}|backlog": backlog,
            f"{name}|completed_total": completed,
            f"{name}|failed_total": 0,
        }
    q = queue_stats(name, waiting=points[-1][1] if points else 0)
    return dataclasses.replace(snap(q, at=now), recent=RecentCounts(now, 300, buckets))


def test_a_backlog_growing_over_the_window_is_a_finding_with_arrivals_against_departures():
    growing = [(ago, 100 + (290 - ago), 1000 + (290 - ago) // 6) for ago in range(290, -1, -10)]  # +60/min
    f = one(findings(backlog_series("task-notifications", growing), History()), "backlog-growing")
    assert f.severity == "warning" and "ETA ∞" in f.cause, f.cause
    assert "70/min arrive, 10/min finish" in f.cause, f.cause
    assert "backlog 100 → 390 in the last 4m50s" in f.evidence, f.evidence
    assert "MA_PROCS_TASK_NOTIFICATIONS" in f.action
    assert badges([f], "task-notifications") == ["GROWING"]


def test_a_burst_that_is_draining_a_backlog_too_small_or_a_flat_one_is_no_growth():
    burst = [(290, 0, 0), (250, 500, 0)] + [
        (ago, 500 - (250 - ago), 250 - ago) for ago in range(240, -1, -10)
    ]
    assert not findings(backlog_series("task-notifications", burst), History()), "draining since the burst"
    small = [(ago, 5 + (290 - ago) // 20, 0) for ago in range(290, -1, -10)]  # +14 in 5 minutes
    assert not findings(backlog_series("task-notifications", small), History())
    flat = [(ago, 400, 1000 + (290 - ago)) for ago in range(290, -1, -10)]
    assert not findings(backlog_series("task-notifications", flat), History()), "a big backlog that holds"
    assert not findings(backlog_series("task-notifications", [(5, 900, 0)]), History()), (
        "one sample: no trend"
    )


def test_a_rate_window_outside_what_is_read_is_refused_naming_the_variable():
    for bad in ("0", "5", "3600"):
        with pytest.raises(ValueError, match=f"MA_TOP_RATE_WINDOW_S={bad} is not between 10 and 900"):
            Thresholds.from_env({"MA_TOP_RATE_WINDOW_S": bad})
