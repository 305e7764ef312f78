"""The downstream-failing and long-running findings (pool/monitor/findings.py) on constructed snapshots, no
engines: each appears with its figures and clears by itself. Downstream counts are by the minute they happened
in, so one snapshot decides (no history needed: `ma-top --once` says the same as ma-top)."""

from __future__ import annotations

import dataclasses

import pytest

from pool.contracts import DOWNSTREAM_OUTCOMES, downstream_field
from pool.downstream import http_outcome, pg_outcome
from pool.monitor.downstreams import DownstreamStats, parse
from pool.monitor.failure_growth import RecentFailures
from pool.monitor.findings import BADGES, Finding, History, Thresholds, badges, findings
from pool.monitor.snapshot import ActiveJob, RedisHealth, Snapshot
from tests.support.fake_source import T0, queue_stats

UP = RedisHealth(True, used_memory=10 * 2**20, maxmemory=0, policy="noeviction")
MINUTE = int(T0 // 60)  # T0 is 40 s into its minute: the default 300 s window overlaps 6 minutes, 5m40s


def snap(*downstreams: DownstreamStats, queues=(), at: float = T0) -> Snapshot:
    return Snapshot(at, tuple(queues), (), UP, {}, (), downstreams=downstreams)


def identity(minutes: dict[int, dict[str, int]], *, at: float = T0) -> DownstreamStats:
    totals: dict[str, int] = {}
    for outcomes in minutes.values():
        for o, n in outcomes.items():
            totals[o] = totals.get(o, 0) + n
    return DownstreamStats("identity", totals, minutes, at)


def only(found: list[Finding], kind: str) -> Finding:
    matching = [f for f in found if f.kind == kind]
    assert len(matching) == 1, [(f.kind, f.subject) for f in found]
    return matching[0]


# -- downstream failing --------------------------------------------------------------------------------------


def test_identity_answering_500_and_timing_out_is_downstream_failing_with_the_figures_by_outcome():
    d = identity({MINUTE - 1: {"ok": 100, "5xx": 30, "timeout": 4}, MINUTE: {"ok": 20, "5xx": 7}})
    f = only(findings(snap(d), History()), "downstream-failing")
    assert (f.severity, f.subject, f.goto) == ("warning", "identity", "events:retry identity")
    assert f.cause == "identity failing: 41 failed requests in the last 5m40s (7.2/min)"
    assert f.evidence == "identity: 37 × 5xx, 4 timeouts in the last 5m40s; 120 ok (> 1/min)"
    assert "identity's health" in f.action


def test_a_downstream_with_no_request_answered_ok_is_critical():
    d = DownstreamStats("stripe", {}, {MINUTE: {"5xx": 30, "connection-error": 2}}, T0)
    f = only(findings(snap(d), History()), "downstream-failing")
    assert (f.severity, f.subject) == ("critical", "stripe")
    assert f.evidence == "stripe: 30 × 5xx, 2 connection errors in the last 5m40s; 0 ok (> 1/min)"
    assert "status.stripe.com" in f.action


def test_downstream_failing_clears_once_the_window_holds_no_more_errors():
    minutes = {MINUTE: {"ok": 5, "5xx": 10}}
    assert only(findings(snap(identity(minutes)), History()), "downstream-failing")
    at_edge = T0 + 300  # the window's start is still in the failing minute: it is still in the window
    minutes[int(at_edge // 60)] = {"ok": 50}
    assert only(findings(snap(identity(minutes, at=at_edge), at=at_edge), History()), "downstream-failing")
    later = T0 + 360  # the window starts in the next minute
    minutes[int(later // 60)] = {"ok": 50}
    found = findings(snap(identity(minutes, at=later), at=later), History())
    assert [f for f in found if f.kind == "downstream-failing"] == []


def test_throttling_refusals_and_query_errors_are_not_a_downstream_failing():
    d = identity({MINUTE: {"ok": 5, "429": 400, "4xx": 30, "error": 9}})
    assert findings(snap(d), History()) == []


def test_a_few_errors_below_the_threshold_are_not_a_finding_and_the_threshold_is_configurable():
    d = identity({MINUTE - 4: {"5xx": 1}, MINUTE: {"ok": 9, "timeout": 1}})  # 2 in 5m40s: 0.35/min
    assert findings(snap(d), History()) == []
    strict = Thresholds.from_env({"MA_TOP_DOWNSTREAM_ERRORS_PER_MIN": "0.1"})
    assert only(findings(snap(d), History(), thresholds=strict), "downstream-failing").subject == "identity"


def test_a_short_window_reads_the_minutes_it_overlaps_and_says_their_real_span():
    d = identity({MINUTE - 1: {"5xx": 9}, MINUTE: {"ok": 3}})
    assert findings(snap(d), History(), thresholds=Thresholds(rate_window_s=30)) == []  # T0 is 40 s in
    f = only(findings(snap(d), History(), thresholds=Thresholds(rate_window_s=45)), "downstream-failing")
    assert "in the last 1m40s" in f.evidence


def test_the_counts_are_parsed_from_the_pools_hash_fields_and_a_stranger_field_is_ignored():
    fields = {downstream_field("5xx", MINUTE): "3", downstream_field("ok", MINUTE - 1): "7", "junk": "x"}
    d = parse("identity", {"5xx": "3", "ok": "7"}, fields, T0)
    assert d.minutes == {MINUTE: {"5xx": 3}, MINUTE - 1: {"ok": 7}}
    assert d.window(300).counts == {"5xx": 3, "ok": 7} and d.totals == {"5xx": 3, "ok": 7}


def test_outcomes_of_answers_and_database_errors():
    assert [http_outcome(s) for s in (200, 204, 301, 404, 422, 429, 500, 503)] == [
        "ok",
        "ok",
        "ok",
        "4xx",
        "4xx",
        "429",
        "5xx",
        "5xx",
    ]

    class PgError(Exception):
        def __init__(self, sqlstate: str) -> None:
            self.sqlstate = sqlstate

    assert pg_outcome(PgError("57014"), is_disconnect=False) == "timeout"
    assert pg_outcome(PgError("08006"), is_disconnect=False) == "connection-error"
    assert pg_outcome(PgError("53300"), is_disconnect=False) == "saturated"  # too many connections
    assert pg_outcome(PgError("23505"), is_disconnect=False) == "error"  # a unique violation is the query's
    assert pg_outcome(ConnectionRefusedError(), is_disconnect=False) == "connection-error"
    assert pg_outcome(TimeoutError(), is_disconnect=False) == "timeout"
    assert pg_outcome(PgError(""), is_disconnect=True) == "connection-error"
    assert {"ok", "429", "4xx", "5xx", "timeout", "connection-error", "error", "saturated"} == set(
        DOWNSTREAM_OUTCOMES
    )


# -- long-running active job ---------------------------------------------------------------------------------


def running(q: str, *jobs: tuple[str, str, float]):
    return dataclasses.replace(
        queue_stats(q, active=len(jobs)), oldest_active=tuple(ActiveJob(*j) for j in jobs)
    )


def test_an_active_job_past_the_threshold_is_long_running_with_the_job_on_the_first_screen():
    q = running("identity-events", ("41", "organization.created", 754.0), ("42", "tenant.created", 3.0))
    found = findings(snap(queues=[q]), History())
    f = only(found, "long-running")
    assert (f.severity, f.subject, f.goto) == ("warning", "identity-events", "job:identity-events:41")
    assert f.evidence == "organization.created#41 running 12m34s (> 10m)"
    assert "active for 12m34s" in f.cause
    assert badges(found, "identity-events") == [BADGES["long-running"]]


def test_several_long_jobs_name_the_longest_and_count_the_rest():
    q = running("billing-invoice", ("7", "invoice.generate", 900.0), ("8", "invoice.generate", 700.0))
    f = only(findings(snap(queues=[q]), History()), "long-running")
    assert "#7 running 15m" in f.evidence and "(+1 more)" in f.cause


def test_long_running_clears_when_the_job_finishes_and_the_threshold_is_configurable():
    q = running("identity-events", ("41", "organization.created", 30.0))
    assert findings(snap(queues=[q]), History()) == []
    short = Thresholds.from_env({"MA_TOP_LONG_RUNNING_S": "20"})
    assert only(findings(snap(queues=[q]), History(), thresholds=short), "long-running")
    done = running("identity-events")
    assert findings(snap(queues=[done], at=T0 + 1), History(), thresholds=short) == []


def test_the_queue_tables_own_limit_wins_for_bulk_jobs_that_run_for_hours():
    bulk = "super-admin.bulk-job"
    hour = running(bulk, ("b1", "bulk.suspend", 3600.0))
    assert findings(snap(queues=[hour]), History()) == []
    stuck = running(bulk, ("b1", "bulk.suspend", 5 * 3600.0))
    assert only(findings(snap(queues=[stuck]), History()), "long-running").evidence.endswith("(> 4h)")


@pytest.mark.parametrize("kind", ["downstream-failing", "long-running", "failure-growing"])
def test_the_new_kinds_are_documented_in_the_readme_and_operations(kind):
    from tests.support.paths import ROOT

    for doc in ("README.md", "docs/OPERATIONS.md"):
        assert f"`{kind}`" in (ROOT / doc).read_text(), f"{doc} lists {kind}"


# -- failure group growing -----------------------------------------------------------------------------------


def group(n: int, *, every_s: float = 10.0, capped: bool = False) -> RecentFailures:
    return RecentFailures(
        "billing-payment-sync",
        "stripe.APIConnectionError: Unexpected error communicating with Stripe",
        "handlers/billing_payment_sync.py:sync",
        "stripe.APIConnectionError: Unexpected error communicating with Stripe (Network error: A ConnectError)",
        tuple(T0 - 5 - i * every_s for i in range(n)),
        tuple(str(900 - i) for i in range(n)),
        capped,
    )


def failing_snap(*groups: RecentFailures, at: float = T0) -> Snapshot:
    return Snapshot(at, (), (), UP, {}, (), recent_failures=groups, failures_read_at=T0)


def test_a_signature_failing_again_and_again_is_failure_growing_with_the_group_one_key_away():
    found = findings(failing_snap(group(12)), History())
    f = only(found, "failure-growing")
    assert (f.severity, f.subject, f.goto) == (
        "warning",
        "billing-payment-sync",
        "failures:billing-payment-sync",
    )
    assert f.cause == (
        "12 jobs failed with one signature in the last 5m: "
        "stripe.APIConnectionError: Unexpected error communicating with Stripe"
    )
    assert f.evidence.startswith(
        "12 new at handlers/billing_payment_sync.py:sync (>= 10), last 5s ago, e.g. #900: "
    )
    assert badges(found, "billing-payment-sync") == [BADGES["failure-growing"]]


def test_failures_spread_beyond_the_window_count_only_the_windows_and_a_capped_read_says_at_least():
    assert findings(failing_snap(group(12, every_s=40)), History()) == []  # 8 of them in the last 5 min
    f = only(findings(failing_snap(group(200, every_s=1, capped=True)), History()), "failure-growing")
    assert f.cause.startswith("at least 200 jobs failed")


def test_failure_growing_clears_when_its_failures_age_out_of_the_window_before_the_next_read():
    assert only(findings(failing_snap(group(12)), History()), "failure-growing")
    assert (
        findings(failing_snap(group(12), at=T0 + 300), History()) == []
    )  # the read is the same, now is later
    fewer = Thresholds.from_env({"MA_TOP_FAILURE_GROUP_GROWTH": "3", "MA_TOP_RATE_WINDOW_S": "60"})
    assert only(findings(failing_snap(group(12)), History(), thresholds=fewer), "failure-growing")
