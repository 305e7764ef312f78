"""The rules that put an alert badge on a queue. Decision logic lives here, in the Textual-free data layer,
so ma-top, `ma-top --once --json` and the exporter can always agree."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pool.monitor.collector import QueueStats

THRESHOLDS = {"billing_usage_backlog": 300, "payment_sync_retries": 50}
"""The runbook's alert thresholds; override with MA_TOP_BILLING_USAGE_BACKLOG / MA_TOP_PAYMENT_SYNC_RETRIES."""


def thresholds_from_env(env: Mapping[str, str] = os.environ) -> dict[str, int]:
    return {name: int(env.get(f"MA_TOP_{name.upper()}", default)) for name, default in THRESHOLDS.items()}


def alerts(q: QueueStats, thresholds: Mapping[str, int]) -> list[str]:
    """The badges for one queue, in the order they are shown."""
    found = []
    waiting = q.counts["waiting"] + q.counts["prioritized"]
    if waiting and not q.workers:
        found.append("NO WORKERS")
    if q.name == "billing-usage" and waiting > thresholds["billing_usage_backlog"]:
        found.append("BACKLOG")
    if q.name == "billing-payment-sync" and q.counters.get("retries", 0) > thresholds["payment_sync_retries"]:
        found.append("RETRIES")
    if not q.handled and (q.counts["waiting"] or q.counts["delayed"]):
        found.append("NO HANDLER")
    if q.paused:
        found.append("PAUSED")
    return found
