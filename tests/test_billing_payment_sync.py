"""Billing payment sync: Stripe webhooks (refunds, duplicates, forgeries), the reconciliation sweep, retries of
Stripe 5xx and a 429 storm across the billing queues."""

from __future__ import annotations

import uuid
from datetime import timedelta

from bullmq import Queue

from tests.support.billing import paid_invoice, signed, stripe_client
from tests.support.billing_fixtures import (
    INVOICE,
    SYNC,
    USAGE,
    billing_pool,  # noqa: F401 - fixture
    iso,
    subscription,  # noqa: F401 - fixture
    this_month,
    today,
)
from tests.support.waits import run_job, settle, wait_for


async def invoiced_and_paid(redis, billing_pool, subscription) -> dict:
    """A fresh subscription invoiced for this month and charged, with invoice and payment-sync pools running."""
    sub = await subscription()
    start, end = this_month()
    billing_pool(INVOICE)
    billing_pool(SYNC)
    job = await run_job(
        redis,
        INVOICE,
        "invoice.generate",
        {
            "organizationId": "org_globex",
            "subscriptionId": sub,
            "periodStart": iso(start),
            "periodEnd": iso(end),
        },
    )
    return job.returnvalue


# -- payment sync -----------------------------------------------------------------------------------------------------
async def test_webhooks_refund_duplicate_and_forged(redis, billing_pool, subscription, identity_db, stripe):
    paid = await invoiced_and_paid(redis, billing_pool, subscription)
    assert paid["paymentStatus"] == "paid"
    client = stripe_client(stripe)
    refund = client.v1.refunds.create({"payment_intent": paid["paymentIntentId"]})
    event = {
        "id": f"evt_{uuid.uuid4().hex[:12]}",
        "object": "event",
        "type": "charge.refunded",
        "data": {"object": {"object": "refund", "id": refund.id, "payment_intent": paid["paymentIntentId"]}},
    }

    forged_body, forged_sig = signed("whsec_not_ours", event)
    forged = await run_job(
        redis,
        SYNC,
        "payment.webhook",
        {
            "stripeEventId": event["id"],
            "type": event["type"],
            "payload": forged_body,
            "signature": forged_sig,
        },
    )
    assert forged.failedReason == "signature: Stripe webhook signature verification failed; nothing changed"
    assert (
        await identity_db.fetchval("SELECT payment_status FROM invoices WHERE id = $1", paid["invoiceId"])
        == "paid"
    )

    body, sig = signed(stripe.WEBHOOK_SECRET, event)
    job = {"stripeEventId": event["id"], "type": event["type"], "payload": body, "signature": sig}
    applied = await run_job(redis, SYNC, "payment.webhook", job)
    assert applied.returnvalue["paymentStatus"] == "refunded" and applied.returnvalue["duplicate"] is False
    row = await identity_db.fetchrow(
        "SELECT payment_status, amount_refunded_minor FROM invoices WHERE id = $1", paid["invoiceId"]
    )
    assert (row["payment_status"], row["amount_refunded_minor"]) == ("refunded", paid["totalMinor"])

    duplicate = await run_job(redis, SYNC, "payment.webhook", job)
    assert duplicate.returnvalue == {
        "stripeEventId": event["id"],
        "duplicate": True,
        "invoiceId": paid["invoiceId"],
    }
    assert (
        await identity_db.fetchval(
            "SELECT count(*) FROM payment_events WHERE stripe_event_id = $1", event["id"]
        )
        == 1
    )


async def test_reconciliation_sweep_finds_a_payment_whose_webhook_was_lost(
    redis, billing_pool, subscription, identity_db, stripe
):
    paid = await invoiced_and_paid(redis, billing_pool, subscription)
    # The sync pool's scheduler sweeps once as the pool starts. Let that sweep pass first: a pool slow to start (a
    # loaded machine) would otherwise find the lost payment below itself, and the sweep under test would see a
    # sync job already there.
    sync = Queue(SYNC, {"connection": redis})

    async def startup_sweep_done() -> bool:
        return any(job.name == "payment.reconcile" for job in await sync.getJobs(["completed"]))

    await wait_for(startup_sweep_done, what="the start-up reconciliation sweep")
    # Identity lost track of the payment (as if the webhook never came and the record call was lost).
    await identity_db.execute(
        "UPDATE invoices SET payment_status = 'unpaid', payment_intent_id = NULL WHERE id = $1",
        paid["invoiceId"],
    )
    sweep = await run_job(redis, SYNC, "payment.reconcile", {})
    key = f"reconcile-{paid['paymentIntentId']}-paid"
    assert key in sweep.returnvalue["jobIds"]
    await settle(redis, SYNC, key)
    row = await identity_db.fetchrow(
        "SELECT payment_status, payment_intent_id FROM invoices WHERE id = $1", paid["invoiceId"]
    )
    assert tuple(row) == ("paid", paid["paymentIntentId"])
    again = await run_job(redis, SYNC, "payment.reconcile", {})
    assert key not in again.returnvalue["jobIds"]

    # A partial refund whose webhook was lost: only the charge shows it, and Stripe lists a PaymentIntent's charge
    # as an id unless the list asks for it expanded (the double answers as Stripe: devstack/stripe_fidelity.py).
    stripe_client(stripe).v1.refunds.create({"payment_intent": paid["paymentIntentId"], "amount": 1})
    late = await run_job(redis, SYNC, "payment.reconcile", {})
    refunded = f"reconcile-{paid['paymentIntentId']}-partially_refunded"
    assert refunded in late.returnvalue["jobIds"], late.returnvalue
    await settle(redis, SYNC, refunded)
    status = await identity_db.fetchval(
        "SELECT payment_status FROM invoices WHERE id = $1", paid["invoiceId"]
    )
    assert status == "partially_refunded"


async def test_stripe_5xx_is_retried_until_it_recovers_and_the_retries_are_counted(
    redis, start_pool, identity, stripe, identity_db
):
    from pool.monitor.collector import Collector

    invoice_id, intent_id = await paid_invoice(identity_db, stripe, 700)
    # Three 503s on this intent, not a window on every path (the slot's payment.reconcile, run at start, could
    # take them all): the first attempt gets two (with the client's own retry, MA_STRIPE_NETWORK_RETRIES=1) and
    # is retried; the second gets one more, then the answer.
    stripe.hook("POST", "/__faults", {"status": 503, "count": 3, "path": f"/v1/payment_intents/{intent_id}"})
    start_pool(
        SYNC, MA_QUEUE_TABLE="tests.support.table:REAL_FAST", IDENTITY_BASE_URL=identity.url, **stripe.env()
    )
    job = await run_job(
        redis,
        SYNC,
        "payment.webhook",
        {
            "stripeEventId": f"evt_{invoice_id}",
            "type": "payment_intent.succeeded",
            "paymentIntentId": intent_id,
        },
        timeout=60,
    )
    assert job.returnvalue["paymentStatus"] == "paid", job.failedReason
    assert job.attemptsMade >= 2
    assert stripe.stats()["fault 503"] >= 2
    stats = {q.name: q for q in (await Collector(redis, [SYNC]).fetch()).queues}
    assert stats[SYNC].counters.get("retries", 0) >= 1  # what ma-top's RETRIES badge and the exporter read


async def test_a_429_storm_defers_every_billing_job_without_burning_attempts_and_logs_once_per_window(
    redis, billing_pool, subscription, identity_db, identity, stripe
):
    pools = {q: billing_pool(q) for q in (USAGE, INVOICE, SYNC)}
    invoices = [await paid_invoice(identity_db, stripe, 900) for _ in range(2)]
    subs = [await subscription() for _ in range(2)]
    start, end = this_month()

    identity.hook("POST", "/__ratelimit", {"max": 2, "windowMs": 1000})
    added = []
    for day in range(1, 7):
        lo = today() - timedelta(days=day)
        added.append(
            (
                USAGE,
                await Queue(USAGE, {"connection": redis}).add(
                    "usage.aggregate",
                    {
                        "organizationId": "org_acme",
                        "subscriptionId": "sub_acme",
                        "periodStart": iso(lo),
                        "periodEnd": iso(lo + timedelta(days=1)),
                        "resolution": "hourly",
                    },
                ),
            )
        )
    for sub in subs:
        added.append(
            (
                INVOICE,
                await Queue(INVOICE, {"connection": redis}).add(
                    "invoice.generate",
                    {
                        "organizationId": "org_globex",
                        "subscriptionId": sub,
                        "periodStart": iso(start),
                        "periodEnd": iso(end),
                    },
                ),
            )
        )
    for invoice_id, intent_id in invoices:
        added.append(
            (
                SYNC,
                await Queue(SYNC, {"connection": redis}).add(
                    "payment.webhook",
                    {
                        "stripeEventId": f"evt_{invoice_id}",
                        "type": "payment_intent.succeeded",
                        "paymentIntentId": intent_id,
                    },
                ),
            )
        )

    async def every_queue_throttled() -> dict[str, int]:
        counts = {q: int(await redis.hget(f"ma:stats:{q}", "throttled") or 0) for q in pools}
        return counts if all(counts.values()) else {}

    # The storm lasts until each billing queue has had a job deferred by it (and identity refused 5 calls).
    await wait_for(every_queue_throttled, timeout=60, what="a throttle on every billing queue")
    await wait_for(
        lambda: identity.stats().get("rate limited", 0) >= 5, what="identity answering 429 to the storm"
    )
    identity.hook("POST", "/__ratelimit", {"max": 0})  # limits relax

    for queue, job in added:
        done = await settle(redis, queue, job.id, timeout=60)
        assert done.returnvalue is not None, (queue, done.failedReason)
        assert done.attemptsMade == 1, f"{queue} {job.name}: a throttle burns no attempt"
    for queue, line in (
        (USAGE, "Billing usage aggregation throttled"),
        (INVOICE, "Billing invoice creation throttled"),
        (SYNC, "Billing payment sync throttled"),
    ):
        text = pools[queue].text()
        # every queue was throttled (above), all within one 30 s window: exactly one line each, not one per job
        assert text.count(f"{line} (job") == 1, f"{queue}: one line per 30 s window, not one per job"
    assert stripe.stats().get("POST /v1/payment_intents", 0) == 2 + 2  # the two above and one per new invoice
    for invoice_id, _ in invoices:
        assert (
            await identity_db.fetchval("SELECT payment_status FROM invoices WHERE id = $1", invoice_id)
            == "paid"
        )
