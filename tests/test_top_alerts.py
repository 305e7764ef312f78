"""The alert badges' rules (pool/monitor/alerts.py): what turns a queue's row red, and what clears it."""

from __future__ import annotations

import dataclasses

from pool.monitor.alerts import THRESHOLDS, alerts, thresholds_from_env
from tests.support.fake_source import queue_stats


def test_waiting_jobs_without_workers_alert_and_a_worker_clears_it():
    assert alerts(queue_stats("identity-events", waiting=1, workers=0), THRESHOLDS) == ["NO WORKERS"]
    assert alerts(queue_stats("identity-events", prioritized=1, workers=0), THRESHOLDS) == ["NO WORKERS"]
    assert alerts(queue_stats("identity-events", waiting=1, workers=1), THRESHOLDS) == []
    assert alerts(queue_stats("identity-events", delayed=5, workers=0), THRESHOLDS) == []


def test_billing_usage_backlog_alerts_above_its_threshold_only():
    assert alerts(queue_stats("billing-usage", waiting=300), THRESHOLDS) == []
    assert alerts(queue_stats("billing-usage", waiting=301), THRESHOLDS) == ["BACKLOG"]
    assert alerts(queue_stats("billing-invoice", waiting=301), THRESHOLDS) == []


def test_payment_sync_retries_alert_above_their_threshold():
    q = queue_stats("billing-payment-sync")
    assert alerts(dataclasses.replace(q, counters={"retries": 51}), THRESHOLDS) == ["RETRIES"]
    assert alerts(dataclasses.replace(q, counters={"retries": 50}), THRESHOLDS) == []


def test_a_queue_nobody_handles_alerts_only_while_it_has_jobs_waiting_or_delayed():
    unhandled = dataclasses.replace(queue_stats("product-x.jobs", delayed=1), handled=False)
    assert alerts(unhandled, THRESHOLDS) == ["NO HANDLER"]
    assert alerts(dataclasses.replace(unhandled, counts={**unhandled.counts, "delayed": 0}), THRESHOLDS) == []


def test_badges_come_in_a_fixed_order():
    q = dataclasses.replace(queue_stats("billing-usage", waiting=400, workers=0), paused=True, handled=False)
    assert alerts(q, THRESHOLDS) == ["NO WORKERS", "BACKLOG", "NO HANDLER", "PAUSED"]


def test_thresholds_come_from_the_environment_with_the_runbook_defaults():
    assert thresholds_from_env({}) == THRESHOLDS
    assert thresholds_from_env({"MA_TOP_BILLING_USAGE_BACKLOG": "10"})["billing_usage_backlog"] == 10
