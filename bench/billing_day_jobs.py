"""bench/billing_day.py's data: the subscriptions and their usage events in PostgreSQL, and each stage's jobs as its
producers add them, as (job id, name, data)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg

from handlers.billing import iso
from handlers.billing_invoice import renewal_job_id
from tests.support.billing import signed

# -- the subscriptions and their usage ------------------------------------------------------------------------------
EVENTS_SQL = """
    INSERT INTO usage_events (organization_id, subscription_id, feature, quantity, occurred_at)
    SELECT 'org_bd_' || (s / 10), $1 || s, (ARRAY['ai.tokens', 'storage.gb', 'api.calls'])[1 + (s + e) % 3],
           CASE (s + e) % 3 WHEN 0 THEN 100 + (s * 7919 + e * 104729) % 20000 WHEN 1 THEN 1 + e % 3
                ELSE 1 + (s + e * 31) % 200 END,
           $2::timestamptz + make_interval(secs => ((s::bigint * 2654435761 + e * 40503) % 1000003)
                                                   / 1000003.0 * $4)
    FROM generate_series(0, $3 - 1) s, generate_series(0, $5 - 1) e
"""


async def prepare(
    admin_url: str, prefixes: list[tuple[str, int]], events: int, start: datetime, end: datetime
) -> None:
    """Organizations, subscriptions (`<prefix><i>`) and their usage events; subscription i of every prefix gets the
    same plan, card and events."""
    conn = await asyncpg.connect(admin_url)
    try:
        orgs = max(n for _, n in prefixes) // 10 + 1
        await conn.execute(
            "INSERT INTO organizations (id, name, slug) SELECT 'org_bd_' || g, 'Billing day ' || g, 'bd-' || g"
            " FROM generate_series(0, $1 - 1) g ON CONFLICT DO NOTHING",
            orgs,
        )
        for prefix, n in prefixes:
            await conn.execute(
                "INSERT INTO subscriptions (id, organization_id, plan_id, current_period_start, current_period_end,"
                " stripe_customer_id, stripe_payment_method) SELECT $1 || g, 'org_bd_' || (g / 10),"
                " CASE WHEN g % 4 = 0 THEN 'plan_growth' ELSE 'plan_starter' END, $2, $3, 'cus_bd_' || g,"
                " CASE WHEN g % 100 = 99 THEN 'pm_card_chargeCustomerFail' ELSE 'pm_card_visa' END"
                " FROM generate_series(0, $4 - 1) g",
                prefix,
                start,
                end,
                n,
            )
            await conn.execute(EVENTS_SQL, prefix, start, n, (end - start).total_seconds(), events)
        await conn.execute("VACUUM ANALYZE usage_events")
    finally:
        await conn.close()


# -- each stage's jobs, as (job id, name, data) ---------------------------------------------------------------------
def rollup_jobs(subs: list[str], today: datetime) -> list[tuple[str, str, dict[str, Any]]]:
    day = today - timedelta(days=1)
    return [
        (
            f"usage-{sub}-{day:%Y%m%d}",
            "usage.aggregate",
            {
                "organizationId": org_of(sub),
                "subscriptionId": sub,
                "periodStart": iso(day),
                "periodEnd": iso(today),
                "resolution": "hourly",
            },
        )
        for sub in subs
    ]


def invoice_jobs(subs: list[str], start: datetime, end: datetime) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (
            renewal_job_id(sub, start),
            "invoice.generate",
            {
                "organizationId": org_of(sub),
                "subscriptionId": sub,
                "periodStart": iso(start),
                "periodEnd": iso(end),
            },
        )
        for sub in subs
    ]


def webhook_jobs(invoices: list[Any], secret: str) -> list[tuple[str, str, dict[str, Any]]]:
    """The webhook Stripe sends for each invoice's PaymentIntent, as the Node receiver forwards it."""
    jobs = []
    for result in invoices:
        intent = result.get("paymentIntentId") if isinstance(result, dict) else None
        if not intent:
            continue
        paid = result["paymentStatus"] == "paid"
        event = {
            "id": f"evt_{intent}",
            "object": "event",
            "type": "payment_intent.succeeded" if paid else "payment_intent.payment_failed",
            "data": {
                "object": {"id": intent, "object": "payment_intent", "status": "succeeded" if paid else ""}
            },
        }
        body, signature = signed(secret, event)
        jobs.append(
            (
                f"stripe-{event['id']}",
                "payment.webhook",
                {
                    "stripeEventId": event["id"],
                    "type": event["type"],
                    "payload": body,
                    "signature": signature,
                },
            )
        )
    return jobs


def org_of(sub: str) -> str:
    return f"org_bd_{int(sub[len(sub.rstrip('0123456789')) :]) // 10}"  # subscription i is in organization i // 10
