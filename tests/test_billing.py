"""Billing: usage rollups (and the backfill CLI), invoices with PDF and renewal, Stripe charges and payment sync."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from bullmq import Queue

from tests.support.billing import paid_invoice, signed, stripe_client
from tests.support.paths import BIN, ROOT
from tests.support.processes import pool_env
from tests.support.waits import run_job, settle, wait_for

USAGE, INVOICE, SYNC = "billing-usage", "billing-invoice", "billing-payment-sync"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def today() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def this_month() -> tuple[datetime, datetime]:
    start = today().replace(day=1)
    return start, (start + timedelta(days=32)).replace(day=1)


@pytest.fixture
def billing_pool(start_real_pool, stripe, tmp_path):
    def start(queue: str, **extra: str):
        return start_real_pool(queue, **stripe.env(), MA_INVOICE_DIR=str(tmp_path / "invoices"), **extra)

    return start


@pytest.fixture
async def subscription(identity_db):
    """A fresh subscription of org_globex on the starter plan, for this month, with the given card."""

    async def make(card: str = "pm_card_visa", plan: str = "plan_starter") -> str:
        sub = f"sub_t{uuid.uuid4().hex[:8]}"
        start, end = this_month()
        await identity_db.execute(
            "INSERT INTO subscriptions (id, organization_id, plan_id, current_period_start, current_period_end,"
            " stripe_customer_id, stripe_payment_method) VALUES ($1, 'org_globex', $2, $3, $4, 'cus_test', $5)",
            sub,
            plan,
            start,
            end,
            card,
        )
        return sub

    return make


async def add_usage(identity_db, sub: str, events: list[tuple[str, str, datetime]]) -> None:
    await identity_db.executemany(
        "INSERT INTO usage_events (organization_id, subscription_id, feature, quantity, occurred_at)"
        " VALUES ('org_globex', $1, $2, $3::numeric, $4)",
        [(sub, feature, qty, at) for feature, qty, at in events],
    )


# -- usage rollups ----------------------------------------------------------------------------------------------------
async def test_rollups_equal_an_independent_aggregation_and_a_rerun_replaces(
    redis, billing_pool, identity_db
):
    start, end = today() - timedelta(days=30), today()
    billing_pool(USAGE)
    body = {
        "organizationId": "org_acme",
        "subscriptionId": "sub_acme",
        "periodStart": iso(start),
        "periodEnd": iso(end),
        "resolution": "daily",
    }
    first = await run_job(redis, USAGE, "usage.aggregate", body)
    assert first.returnvalue is not None, first.failedReason

    raw = await identity_db.fetch(
        "SELECT feature, quantity, occurred_at FROM usage_events WHERE subscription_id ="
        " 'sub_acme' AND occurred_at >= $1 AND occurred_at < $2",
        start,
        end,
    )
    reference: dict[tuple[str, datetime], list] = defaultdict(lambda: [Decimal(0), 0])
    for r in raw:
        day = r["occurred_at"].astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        reference[(r["feature"], day)][0] += r["quantity"]
        reference[(r["feature"], day)][1] += 1

    async def stored() -> dict:
        rows = await identity_db.fetch(
            "SELECT feature, bucket_start, quantity, event_count, writes FROM usage_rollups"
            " WHERE subscription_id = 'sub_acme' AND resolution = 'daily'"
            " AND bucket_start >= $1 AND bucket_start < $2",
            start,
            end,
        )
        return {
            (r["feature"], r["bucket_start"]): (r["quantity"], r["event_count"], r["writes"]) for r in rows
        }

    once = await stored()
    assert len(raw) > 100 and len(once) == len(reference)
    assert {k: list(v[:2]) for k, v in once.items()} == dict(reference.items())
    assert first.returnvalue["events"] == len(raw) and first.returnvalue["rollups"] == len(reference)

    again = await run_job(redis, USAGE, "usage.aggregate", body)
    twice = await stored()
    assert {k: v[:2] for k, v in twice.items()} == {k: v[:2] for k, v in once.items()}  # replaced, not added
    assert {v[2] for v in twice.values()} == {v[2] + 1 for v in once.values()}
    assert again.returnvalue["removed"] == 0

    # A late correction: one event gone; the re-run makes the rollup follow, and an emptied bucket disappears.
    victim = raw[0]
    await identity_db.execute(
        "DELETE FROM usage_events WHERE subscription_id = 'sub_acme' AND occurred_at = $1 AND feature = $2",
        victim["occurred_at"],
        victim["feature"],
    )
    await run_job(redis, USAGE, "usage.aggregate", body)
    fixed = await stored()
    day = victim["occurred_at"].astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    key = (victim["feature"], day)
    if reference[key][1] == 1:
        assert key not in fixed
    else:
        assert fixed[key][:2] == (reference[key][0] - victim["quantity"], reference[key][1] - 1)


async def test_bad_periods_fail_naming_the_field(redis, billing_pool):
    billing_pool(USAGE)
    base = {"organizationId": "org_acme", "subscriptionId": "sub_acme", "resolution": "daily"}
    job = await run_job(
        redis,
        USAGE,
        "usage.aggregate",
        {**base, "periodStart": "2024-08-01T10:30:00Z", "periodEnd": "2024-08-02T00:00:00Z"},
    )
    assert "periodStart must start a day (UTC) for resolution daily" in job.failedReason
    job = await run_job(
        redis,
        USAGE,
        "usage.aggregate",
        {**base, "periodStart": "2024-08-02T00:00:00Z", "periodEnd": "2024-08-01T00:00:00Z"},
    )
    assert "periodEnd must be after periodStart" in job.failedReason
    job = await run_job(
        redis,
        USAGE,
        "usage.aggregate",
        {
            **base,
            "subscriptionId": "sub_globex",
            "periodStart": "2024-08-01T00:00:00Z",
            "periodEnd": "2024-08-02T00:00:00Z",
        },
    )
    assert job.failedReason == "subscriptionId sub_globex is not in organization org_acme; refused"


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ma-worker"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


async def test_backfill_cli_enqueues_one_job_per_period_once(
    redis, valkey, db_urls, billing_pool, identity_db
):
    env = pool_env(valkey.url, db_urls)
    env.pop("MA_QUEUE_TABLE")
    args = [
        "billing",
        "backfill",
        "--org",
        "org_acme",
        "--subscription",
        "sub_acme",
        "--resolution",
        "daily",
        "--features",
        "ai.tokens",
    ]
    start, end = today() - timedelta(days=12), today() - timedelta(days=7)
    window = ["--start", start.date().isoformat(), "--end", end.date().isoformat()]

    dry = cli(*args, *window, "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "would enqueue 5 job(s)" in dry.stdout and await redis.exists("bull:billing-usage:meta") == 0

    first = cli(*args, *window, env=env)
    assert first.returncode == 0, first.stderr
    assert "enqueued 5 job(s), 0 already there" in first.stdout
    second = cli(*args, *window, env=env)
    assert "enqueued 0 job(s), 5 already there" in second.stdout
    assert await Queue(USAGE, {"connection": redis}).getJobCounts("waiting") == {"waiting": 5}

    for bad, message in (
        (
            ["--start", "2024-09-01", "--end", "2024-08-01"],
            "--end 2024-08-01 is not after --start 2024-09-01",
        ),
        (["--start", "2024-13-01", "--end", "2024-08-01"], "--start 2024-13-01 is not a date (YYYY-MM-DD)"),
    ):
        out = cli(*args, *bad, env=env)
        assert out.returncode == 2 and message in out.stderr, out.stderr
    out = cli(*[a if a != "sub_acme" else "sub_nope" for a in args], *window, env=env)
    assert out.returncode == 2 and "subscription sub_nope does not exist" in out.stderr

    billing_pool(USAGE)
    q = Queue(USAGE, {"connection": redis})
    await wait_for(lambda: _all_completed(q, 5), what="5 backfill jobs completed", timeout=30)
    rows = await identity_db.fetchval(
        "SELECT count(DISTINCT bucket_start) FROM usage_rollups WHERE subscription_id ="
        " 'sub_acme' AND resolution = 'daily' AND feature = 'ai.tokens'"
        " AND bucket_start >= $1 AND bucket_start < $2",
        start,
        end,
    )
    days_with_usage = await identity_db.fetchval(
        "SELECT count(DISTINCT date_trunc('day', occurred_at, 'UTC')) FROM usage_events WHERE subscription_id ="
        " 'sub_acme' AND feature = 'ai.tokens' AND occurred_at >= $1 AND occurred_at < $2",
        start,
        end,
    )
    assert rows == days_with_usage > 0
    backfill_ids = {j.returnvalue["backfillId"] for j in await q.getJobs(["completed"])}
    assert len(backfill_ids) == 1


async def test_backfill_with_stagger_spreads_the_periods_as_delayed_jobs_under_the_same_ids(
    redis, valkey, db_urls
):
    from pool.billing_cli import backfill_jobs

    env = pool_env(valkey.url, db_urls)
    env.pop("MA_QUEUE_TABLE")
    start, end = today() - timedelta(days=30), today() - timedelta(days=20)
    args = [
        "billing",
        "backfill",
        "--org",
        "org_acme",
        "--subscription",
        "sub_acme",
        "--start",
        start.date().isoformat(),
        "--end",
        end.date().isoformat(),
        "--resolution",
        "daily",
    ]
    expected = [job_id for job_id, _ in backfill_jobs("org_acme", "sub_acme", start, end, "daily", None)]

    dry = cli(*args, "--stagger", "1h", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "would enqueue 10 job(s) as delayed jobs, 0 already there (dry run)" in dry.stdout
    assert "schedule: 10 job(s) over 1:00:00, one every 360.0s" in dry.stdout
    assert "+0:00:00" in dry.stdout and "+0:54:00" in dry.stdout and expected[-1] in dry.stdout
    assert await redis.exists("bull:billing-usage:meta") == 0, "a dry run enqueues nothing"

    bad = cli(*args, "--stagger", "soon", env=env)
    assert bad.returncode == 2 and "--stagger 'soon' is not a duration" in bad.stderr

    first = cli(*args, "--stagger", "1h", env=env)
    assert "enqueued 10 job(s) as delayed jobs, 0 already there" in first.stdout, first.stderr
    q = Queue(USAGE, {"connection": redis})
    assert await q.getJobCounts("delayed", "waiting") == {"delayed": 9, "waiting": 1}, "the first runs now"
    delayed = await q.getJobs(["delayed", "waiting"])
    assert sorted(j.id for j in delayed) == sorted(expected), (
        "the same deterministic ids as without --stagger"
    )
    by_id = {j.id: j for j in delayed}
    assert [by_id[i].delay for i in expected] == [i * 360_000 for i in range(10)]
    due = [by_id[i].timestamp + by_id[i].delay for i in expected]
    assert due == sorted(due) and due[-1] - due[0] >= 54 * 60_000, "due in period order over the hour"

    again = cli(*args, "--stagger", "1h", env=env)
    assert "enqueued 0 job(s), 10 already there" in again.stdout, again.stdout
    plain = cli(*args, env=env)
    assert "enqueued 0 job(s), 10 already there" in plain.stdout
    assert await q.getJobCounts("delayed", "waiting") == {"delayed": 9, "waiting": 1}


async def _all_completed(q: Queue, n: int) -> bool:
    return (await q.getJobCounts("completed"))["completed"] == n


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


async def test_load_test_cli_reports_how_the_billing_queues_drained(redis, valkey, db_urls, billing_pool):
    billing_pool(USAGE)
    env = pool_env(valkey.url, db_urls)
    env.pop("MA_QUEUE_TABLE")
    out = cli(
        "billing",
        "load-test",
        "--org",
        "org_acme",
        "--subscription",
        "sub_acme",
        "--days",
        "3",
        "--usage-jobs",
        "25",
        "--invoices",
        "false",
        "--timeout",
        "60",
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("billing-usage"))
    assert row.split() == ["billing-usage", "25", "25", "0", "0", "0"]
    assert "jobs/s" in out.stdout
    bad = cli(
        "billing",
        "load-test",
        "--org",
        "org_acme",
        "--subscription",
        "sub_acme",
        "--invoices",
        "maybe",
        env=env,
    )
    assert bad.returncode == 2 and "expected true or false" in bad.stderr


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
        assert await queue.getJobState(added.id) in ("delayed", "wait")  # retried later, not failed for good
        assert "disk full (ENOSPC: No space left on device) writing" in job.failedReason
        assert str(disk) in job.failedReason
        assert sorted(p.name for p in disk.iterdir()) == [".filler"]  # no partial PDF, nothing under its name

        free()
        done = await settle(redis, INVOICE, added.id, timeout=90)
        assert done.returnvalue is not None, done.failedReason
        pdf = Path(done.returnvalue["document"])
        assert pdf.parent == disk.resolve() and sorted(p.name for p in disk.iterdir()) == [pdf.name]
        invoice = await identity_db.fetchrow("SELECT * FROM invoices WHERE subscription_id = $1", sub)
        assert hashlib.sha256(pdf.read_bytes()).hexdigest() == invoice["document_sha256"]
        assert pool.proc.poll() is None
