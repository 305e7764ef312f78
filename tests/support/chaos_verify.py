"""A chaos scenario's invariants, checked once its load has drained: every job completed or failed with a
reason, each side effect exactly once (counted in the databases and at the Stripe double), no FATAL process, no
secret in any log (`verify`); and its figures recorded in var/chaos-results.json for bench/REPORT.md (`record`)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import stripe as stripe_sdk

from tests.support.chaos import BackgroundLoad
from tests.support.chaos_load import Load, drain
from tests.support.chaos_stack import Stack
from tests.support.paths import ROOT
from tests.support.processes import SERVICE_KEY

RESULTS = ROOT / "var" / "chaos-results.json"


# -- invariants ---------------------------------------------------------------------------------------------------
async def duplicated_effects(stack: Stack, load: Load) -> dict[str, int]:
    """Effects beyond one per unit of work, and units of work with no effect (counted separately by caller)."""
    dup: dict[str, int] = {}
    missing: dict[str, int] = {}
    tasks_db = await asyncpg.connect(stack.urls.tasks)
    identity_db = await asyncpg.connect(stack.urls.admin)
    try:
        rows = await tasks_db.fetch(
            "SELECT task_id, count(*) AS n FROM notifications WHERE task_id = ANY($1::text[])"
            " GROUP BY task_id",
            load.tasks,
        )
        counts = {r["task_id"]: r["n"] for r in rows}
        dup["notifications"] = sum(n - 1 for n in counts.values() if n > 1)
        missing["notifications"] = sum(1 for t in load.tasks if t not in counts)

        rows = await tasks_db.fetch(
            "SELECT organization_id, count(*) AS n FROM entitlements WHERE organization_id ="
            " ANY($1::text[]) GROUP BY organization_id",
            load.orgs,
        )
        per_org = {r["organization_id"]: r["n"] for r in rows}
        defaults = await identity_db.fetchval(
            "SELECT count(*) FROM product_default_entitlements WHERE product_slug = 'tasks'"
        )
        dup["entitlements"] = sum(n - defaults for n in per_org.values() if n > defaults)
        missing["org bootstraps"] = sum(1 for o in load.orgs if per_org.get(o) != defaults)

        emails = [e for _, e in load.invitations]
        rows = await identity_db.fetch(
            "SELECT email, invite_count FROM auth_users WHERE email = ANY($1::text[])", emails
        )
        dup["invites"] = sum(r["invite_count"] - 1 for r in rows)
        missing["invites"] = len(emails) - len(rows)

        wrong_rollups = 0
        for day in load.usage_days:
            raw = await identity_db.fetchval(
                "SELECT coalesce(sum(quantity), 0) FROM usage_events WHERE subscription_id = 'sub_acme' AND"
                " occurred_at >= $1 AND occurred_at < $2",
                day,
                day + timedelta(days=1),
            )
            rolled = await identity_db.fetchval(
                "SELECT coalesce(sum(quantity), 0) FROM usage_rollups WHERE subscription_id = 'sub_acme' AND"
                " resolution = 'hourly' AND bucket_start >= $1 AND bucket_start < $2",
                day,
                day + timedelta(days=1),
            )
            wrong_rollups += int(raw != rolled)
        dup["rollups (sum differs from raw)"] = wrong_rollups

        rows = await identity_db.fetch(
            "SELECT subscription_id, id, payment_status FROM invoices WHERE subscription_id"
            " = ANY($1::text[])",
            load.subs,
        )
        invoices = {r["subscription_id"]: r for r in rows}
        dup["invoices"] = len(rows) - len(invoices)
        missing["invoices paid"] = sum(
            1 for s in load.subs if s not in invoices or invoices[s]["payment_status"] != "paid"
        )
        charges: dict[str, int] = {}
        client = stripe_sdk.StripeClient(stack.stripe.SECRET_KEY, base_addresses={"api": stack.stripe.url})
        params: dict[str, Any] = {"limit": 100}
        for _ in range(1000):  # bounded: 100,000 intents is far beyond any run of this module
            page = client.v1.payment_intents.list(params)
            for intent in page.data:
                invoice_id = intent.metadata.to_dict().get("invoiceId")
                if invoice_id:
                    charges[invoice_id] = charges.get(invoice_id, 0) + 1
            if not page.has_more:
                break
            params["starting_after"] = page.data[-1].id
        else:
            raise AssertionError("more than 1000 pages of PaymentIntents at the Stripe double")
        dup["stripe charges"] = sum(charges.get(r["id"], 0) - 1 for r in rows if charges.get(r["id"], 0) > 1)

        bulk_id, users = load.bulk
        rows = await identity_db.fetch(
            "SELECT target_id, count(*) AS n FROM audit_events WHERE details->>'bulkJobId'"
            " = $1 GROUP BY target_id",
            bulk_id,
        )
        dup["bulk items"] = sum(r["n"] - 1 for r in rows)
        missing["bulk items"] = len(users) - len(rows)
    finally:
        await tasks_db.close()
        await identity_db.close()
    return {**dict(dup.items()), **{f"missing {k}": v for k, v in missing.items()}}


def secrets_in_logs(stack: Stack) -> list[str]:
    secrets = [SERVICE_KEY, stack.stripe.SECRET_KEY, stack.stripe.WEBHOOK_SECRET]
    found = []
    for log in (stack.sup.home / "var" / "log").glob("*.log"):
        text = log.read_text(errors="replace")
        found += [f"{log.name}: {s[:6]}..." for s in secrets if s in text]
    return found


async def verify(
    stack: Stack,
    load: Load,
    scenario: str,
    started: float,
    *,
    recovery_s: float | None = None,
    extra: dict[str, Any] | None = None,
    bg: BackgroundLoad | None = None,
) -> dict[str, Any]:
    if bg:
        await bg.stop()
    states = await drain(stack, load)
    flat = [(q, *row) for q, rows in states.items() for row in rows]
    effects = await duplicated_effects(stack, load)
    fatal = [f"{p['group']}:{p['name']}" for p in stack.sup.processes() if p["statename"] == "FATAL"]
    figures = {
        "scenario": scenario,
        "jobs_in": len(flat),
        "completed": sum(1 for *_, s, _ in flat if s == "completed"),
        "failed_with_reason": sum(1 for *_, s, r in flat if s == "failed" and r),
        "failed_without_reason": sum(1 for *_, s, r in flat if s == "failed" and not r),
        "lost": sum(1 for *_, s, _ in flat if s in ("lost", "pending")),
        "duplicated": sum(v for k, v in effects.items() if not k.startswith("missing")),
        "missing_effects": sum(v for k, v in effects.items() if k.startswith("missing")),
        "fatal": len(fatal),
        "secrets_in_logs": len(secrets_in_logs(stack)),
        "recovery_s": recovery_s,
        "elapsed_s": round(time.monotonic() - started, 1),
        **(extra or {}),
        **(await background_figures(stack, bg) if bg else {}),
    }
    record(figures)
    failures = [(q, j, r) for q, j, s, r in flat if s == "failed"]
    assert figures["lost"] == 0, [row for row in flat if row[2] in ("lost", "pending")][:10]
    assert figures["failed_without_reason"] == 0
    assert figures["duplicated"] == 0 and figures["missing_effects"] == 0, effects
    assert not failures, failures[:10]  # this load is all valid: everything completes once the fault is over
    assert not fatal, fatal
    assert figures["secrets_in_logs"] == 0, secrets_in_logs(stack)
    if bg:  # the background load: every job of it completed too
        assert not bg.lost and not bg.failed, (bg.lost[:10], bg.failed[:10])
    return figures


async def background_figures(stack: Stack, bg: BackgroundLoad) -> dict[str, Any]:
    redis = stack.redis()
    try:
        return await bg.figures(redis)
    finally:
        await redis.aclose()


def record(figures: dict[str, Any]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[figures["scenario"]] = {**figures, "at": datetime.now(UTC).isoformat(timespec="seconds")}
    RESULTS.write_text(json.dumps(results, indent=2))
