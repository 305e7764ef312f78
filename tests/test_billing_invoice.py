"""Billing invoices: pricing, the PDF (and a full disk under it), the renewal, the charge at Stripe (once, even
when its answer is lost) and a declined card."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import datetime, timedelta
from pathlib import Path

from bullmq import Queue

from tests.support.billing import stripe_client
from tests.support.billing_fixtures import (
    INVOICE,
    SYNC,
    billing_pool,  # noqa: F401 - fixture
    iso,
    subscription,  # noqa: F401 - fixture
    this_month,
)
from tests.support.waits import run_job, settle, wait_for


async def add_usage(identity_db, sub: str, events: list[tuple[str, str, datetime]]) -> None:
    await identity_db.executemany(
        "INSERT INTO usage_events (organization_id, subscription_id, feature, quantity, occurred_at)"
        " VALUES ('org_globex', $1, $2, $3::numeric, $4)",
        [(sub, feature, qty, at) for feature, qty, at in events],
    )


# -- invoices ---------------------------------------------------------------------------------------------------------
async def test_invoice_is_priced_exactly_rendered_recorded_charged_once_and_renewed_once(
    redis, billing_pool, subscription, identity_db, stripe, tmp_path
):
    from pypdf import PdfReader

    sub = await subscription()
    start, end = this_month()
    at = start + timedelta(hours=3)
    await add_usage(
        identity_db,
        sub,
        [
            ("ai.tokens", "50000", at),
            ("ai.tokens", "50000", at),
            ("ai.tokens", "50250", at + timedelta(hours=1)),  # 50,250 over 100,000
            ("storage.gb", "6", at),
            ("storage.gb", "6", at),  # 2 GB over 10
            ("api.calls", "9000", at),
        ],
    )
    billing_pool(INVOICE)
    body = {
        "organizationId": "org_globex",
        "subscriptionId": sub,
        "periodStart": iso(start),
        "periodEnd": iso(end),
    }
    first = await run_job(redis, INVOICE, "invoice.generate", body)
    result = first.returnvalue
    assert result is not None, first.failedReason
    # 4900 base + 50,250 x 0.002 = 100.5 -> 101 (half up) + 2 x 25 = 50 + 0 = 5051 minor units.
    assert (result["totalMinor"], result["total"], result["paymentStatus"]) == (5051, "USD 50.51", "paid")
    invoice = await identity_db.fetchrow("SELECT * FROM invoices WHERE subscription_id = $1", sub)
    assert invoice["total_minor"] == 5051 and invoice["payment_status"] == "paid"
    assert invoice["payment_intent_id"] == result["paymentIntentId"]
    lines = {line["feature"]: line for line in json.loads(invoice["lines"])}
    assert lines["ai.tokens"]["overage"] == "50250" and lines["ai.tokens"]["amountMinor"] == 101
    assert lines["api.calls"]["amountMinor"] == 0

    pdf = Path(result["document"])
    assert pdf.parent == (tmp_path / "invoices").resolve()
    words = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.read_bytes())).pages)
    assert invoice["number"] in words and "USD 50.51" in words
    assert hashlib.sha256(pdf.read_bytes()).hexdigest() == invoice["document_sha256"]

    again = await run_job(redis, INVOICE, "invoice.generate", body)  # e.g. the Node side sends it twice
    assert (
        again.returnvalue["invoiceId"] == result["invoiceId"] and again.returnvalue["paymentStatus"] == "paid"
    )
    assert stripe.stats().get("POST /v1/payment_intents") == 1
    assert await identity_db.fetchval("SELECT count(*) FROM invoices WHERE subscription_id = $1", sub) == 1

    renewal = result["renewalJobId"]
    assert result["renewalScheduled"] is True and again.returnvalue["renewalScheduled"] is False
    q = Queue(INVOICE, {"connection": redis})
    delayed = [j for j in await q.getJobs(["delayed"]) if j.data.get("subscriptionId") == sub]
    assert [j.id for j in delayed] == [renewal]
    next_end = (end + timedelta(days=32)).replace(day=1)
    assert delayed[0].data == {
        "organizationId": "org_globex",
        "subscriptionId": sub,
        "periodStart": iso(end),
        "periodEnd": iso(next_end),
    }


async def test_declined_card_is_recorded_and_a_retry_is_a_new_attempt(
    redis, billing_pool, subscription, identity_db, stripe
):
    sub = await subscription(card="pm_card_chargeCustomerFail")
    start, end = this_month()
    billing_pool(INVOICE)  # the sync pool later: its start-up reconciliation sweep lists PaymentIntents
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
    assert job.returnvalue["paymentStatus"] == "failed" and job.returnvalue["failureCode"] == "card_declined"
    invoice = await identity_db.fetchrow("SELECT * FROM invoices WHERE subscription_id = $1", sub)
    assert (invoice["payment_status"], invoice["failure_code"]) == ("failed", "card_declined")
    declined = job.returnvalue["paymentIntentId"]
    assert declined and declined.startswith("pi_"), "the declined intent, as Stripe's card error names it"
    assert invoice["payment_intent_id"] == declined
    assert stripe_client(stripe).v1.payment_intents.retrieve(declined).status == "requires_payment_method"
    assert not stripe.stats().get("GET /v1/payment_intents"), "no list of every intent to find it"

    billing_pool(SYNC)
    retry = await run_job(redis, SYNC, "payment.retry", {"invoiceId": invoice["id"]})
    assert retry.failedReason == (
        f"payment of invoice {invoice['number']} declined (card_declined) on attempt 2;"
        " recorded on the invoice"
    )
    assert retry.attemptsMade == 1  # permanent: not retried by BullMQ
    assert stripe.stats().get("POST /v1/payment_intents") == 2  # one per attempt


async def test_worker_killed_between_charge_and_record_never_charges_twice(
    redis, start_pool, identity, stripe, subscription, identity_db, tmp_path
):
    sub = await subscription()
    start, end = this_month()
    # Stripe creates the PaymentIntent, then its answer is held back: the worker is killed before it hears the id.
    stripe.hook(
        "POST", "/__faults", {"status": "slow-after", "delay": 20, "path": "/v1/payment_intents", "count": 1}
    )
    env = {
        "MA_QUEUE_TABLE": "tests.support.table:REAL_FAST",
        "IDENTITY_BASE_URL": identity.url,
        "MA_INVOICE_DIR": str(tmp_path),
        **stripe.env(),
    }
    first = start_pool(INVOICE, **env)
    q = Queue(INVOICE, {"connection": redis})
    added = await q.add(
        "invoice.generate",
        {
            "organizationId": "org_globex",
            "subscriptionId": sub,
            "periodStart": iso(start),
            "periodEnd": iso(end),
        },
        {"attempts": 3},
    )
    await wait_for(lambda: stripe.stats().get("POST /v1/payment_intents") == 1, what="the charge at Stripe")
    first.proc.kill()
    first.proc.wait()
    assert (
        await identity_db.fetchval("SELECT payment_intent_id FROM invoices WHERE subscription_id = $1", sub)
        is None
    )
    second = start_pool(INVOICE, **env)
    job = await settle(redis, INVOICE, added.id, timeout=60)
    assert job.returnvalue is not None, job.failedReason
    assert stripe.stats().get("POST /v1/payment_intents") == 1  # adopted by metadata, not charged again
    invoice = await identity_db.fetchrow("SELECT * FROM invoices WHERE subscription_id = $1", sub)
    assert (invoice["payment_status"], invoice["payment_intent_id"]) == (
        "paid",
        job.returnvalue["paymentIntentId"],
    )
    assert "adopting" in second.text()


async def test_an_invoice_pdf_on_a_full_disk_fails_naming_enospc_leaves_no_file_and_is_retried(
    redis, start_real_pool, stripe, subscription, identity_db, tmp_path
):
    from bullmq import Job

    from tests.support.disk import full_disk

    sub = await subscription()
    start, end = this_month()
    await add_usage(identity_db, sub, [("api.calls", "10", start + timedelta(hours=1))])
    disk = tmp_path / "disk"
    with full_disk(disk) as free:
        pool = start_real_pool(INVOICE, **stripe.env(), MA_INVOICE_DIR=str(disk))
        body = {
            "organizationId": "org_globex",
            "subscriptionId": sub,
            "periodStart": iso(start),
            "periodEnd": iso(end),
        }
        queue = Queue(INVOICE, {"connection": redis})
        added = await queue.add("invoice.generate", body)

        async def first_attempt_failed() -> Job | None:
            job = await Job.fromId(queue, added.id)
            return job if job is not None and job.attemptsMade >= 1 else None

        job = await wait_for(first_attempt_failed, what="the first attempt failed")
        # retried later, not failed for good ("active": its 2 s backoff already over on a busy machine)
        assert await queue.getJobState(added.id) in ("delayed", "wait", "active")
        assert "disk full (ENOSPC: No space left on device) writing" in job.failedReason
        assert str(disk) in job.failedReason
        # No partial PDF, nothing under its name. Waited for: a retry running now has its temporary file open
        # until ENOSPC ends it; a file the failure left behind never goes and fails this wait.
        await wait_for(
            lambda: sorted(p.name for p in disk.iterdir()) == [".filler"],
            timeout=15,
            what="only the filler left",
        )

        free()
        done = await settle(redis, INVOICE, added.id, timeout=90)
        assert done.returnvalue is not None, done.failedReason
        pdf = Path(done.returnvalue["document"])
        assert pdf.parent == disk.resolve() and sorted(p.name for p in disk.iterdir()) == [pdf.name]
        invoice = await identity_db.fetchrow("SELECT * FROM invoices WHERE subscription_id = $1", sub)
        assert hashlib.sha256(pdf.read_bytes()).hexdigest() == invoice["document_sha256"]
        assert pool.proc.poll() is None
