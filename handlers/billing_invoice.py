"""Queue `billing-invoice`: `invoice.generate` prices a period, writes the invoice PDF, records the invoice,
charges it once, and schedules the renewal.

Order matters for "never twice":
1. refresh the period's daily rollups (the same replace-not-add upsert as billing-usage), price them against
   the plan with exact decimals;
2. record the invoice at identity, idempotent per (subscription, period): a retry gets the first record back;
3. render the PDF to MA_INVOICE_DIR (temporary name, renamed when complete) and attach its path;
4. charge: our own record (tasks DB `billing_charges`) is written *before* Stripe is called and checked first on
   every retry; a charge whose answer was lost (the worker died after Stripe created it) is found again by the
   invoice id in the metadata of the PaymentIntents Stripe created since our record; a declined card names its
   intent in the error. The Stripe double does not honour idempotency keys, so we send one but never rely on it;
5. record the payment state at identity; schedule the next period as a delayed job with a deterministic id.
429 from identity -> deferred (`Billing invoice creation throttled`, logged once per window by the pool).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import text

from handlers import billing
from handlers.billing import Period, Resolution, Subscription, iso, money, plain, stripe_call, stripe_error
from handlers.billing_usage import UsageAggregate, aggregate
from handlers.context import Handler, IdempotencyKeys, JobContext
from handlers.errors import PermanentError, disk_full

QUEUE = "billing-invoice"


class InvoiceGenerate(Period):
    pass


def _resolution_for(p: Period) -> Resolution:
    resolutions: tuple[Resolution, ...] = ("daily", "hourly")
    for resolution in resolutions:
        if billing.is_aligned(p.period_start, resolution) and billing.is_aligned(p.period_end, resolution):
            return resolution
    raise PermanentError("periodStart and periodEnd must fall on whole hours (UTC) to be invoiced")


async def _usage(ctx: JobContext, p: Period, resolution: str) -> dict[str, Decimal]:
    async with ctx.identity_db.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT feature, sum(quantity) FROM usage_rollups WHERE subscription_id = :sub AND resolution = :res"
                " AND bucket_start >= :start AND bucket_start < :end GROUP BY feature"
            ),
            {"sub": p.subscription_id, "res": resolution, "start": p.period_start, "end": p.period_end},
        )
        return {feature: Decimal(total) for feature, total in rows}


# -- the document -------------------------------------------------------------------------------------------------
def render_pdf(path: Path, invoice: dict[str, Any], sub: Subscription) -> str:
    """Write the invoice PDF (fpdf2) under a temporary name, fsync, rename; return its sha256. Runs in a thread."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_title(f"Invoice {invoice['number']}")
    pdf.set_creation_date(datetime(2000, 1, 1, tzinfo=UTC))  # same inputs, same bytes
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(0, 12, f"Invoice {invoice['number']}", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    for label, value in (
        ("Organization", sub.organization_id),
        ("Subscription", sub.id),
        ("Plan", f"{sub.plan_name} ({sub.plan_id})"),
        ("Period", f"{invoice['periodStart'][:10]} to {invoice['periodEnd'][:10]} (UTC)"),
    ):
        pdf.cell(0, 6, f"{label}: {value}", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    currency = invoice["currency"]
    rows = [
        ("Item", "Quantity", "Included", "Overage", "Unit price", "Amount"),
        (f"{sub.plan_name} plan", "", "", "", "", money(sub.base_minor, currency)),
    ]
    for line in invoice["lines"]:
        rows.append(
            (
                line["feature"],
                line["quantity"],
                line["included"],
                line["overage"],
                f"{line['unitPriceMinor']} minor",
                money(line["amountMinor"], currency),
            )
        )
    with pdf.table(
        col_widths=(40, 28, 28, 28, 28, 34), text_align=("LEFT", "RIGHT", "RIGHT", "RIGHT", "RIGHT", "RIGHT")
    ) as table:
        for values in rows:
            table.row([str(v) for v in values])
    pdf.ln(4)
    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(0, 8, f"Total due: {money(invoice['totalMinor'], currency)}", new_x="LMARGIN", new_y="NEXT")
    data = bytes(pdf.output())
    partial = path.with_name(f".{path.name}.part")
    try:
        with open(partial, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except OSError as error:
        partial.unlink(missing_ok=True)  # a full disk leaves nothing behind, under either name
        raise disk_full(error, path) from error
    os.replace(partial, path)
    return hashlib.sha256(data).hexdigest()


# -- the charge ---------------------------------------------------------------------------------------------------
async def _charge_row(ctx: JobContext, invoice_id: str, attempt: int) -> dict[str, Any] | None:
    async with ctx.tasks_db.connect() as conn:
        row = (
            (
                await conn.execute(
                    text("SELECT * FROM billing_charges WHERE invoice_id = :i AND attempt = :a"),
                    {"i": invoice_id, "a": attempt},
                )
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None


CLOCK_SLACK_S = 600
"""How far Stripe's clock may be behind our database's when looking for an intent created after our row."""


async def _find_intent(ctx: JobContext, invoice_id: str, attempt: int, since: datetime) -> Any:
    """The PaymentIntent an earlier try created for this invoice and attempt, found by its metadata among those
    Stripe created after our row was written (`since`), newest first; its charge expanded, as Stripe sends it
    only when asked (a refund is seen through it)."""
    params: dict[str, Any] = {
        "limit": 100,
        "created": {"gte": int(since.timestamp()) - CLOCK_SLACK_S},
        "expand": ["data.latest_charge"],
    }
    while True:
        page = await stripe_call(ctx.stripe.v1.payment_intents.list_async(params), "payment intents list")
        for intent in page.data:
            meta = plain(intent.metadata)
            if meta.get("invoiceId") == invoice_id and str(meta.get("attempt")) == str(attempt):
                return intent
        if not page.has_more or not page.data:
            return None
        params["starting_after"] = page.data[-1].id


async def charge(ctx: JobContext, invoice: dict[str, Any], sub: Subscription, attempt: int) -> dict[str, Any]:
    """Charge `invoice` once for `attempt`: returns {paymentIntentId, status, failureCode}."""
    import stripe

    invoice_id = invoice["id"]
    key = f"invoice-{invoice_id}-attempt-{attempt}"
    row = await _charge_row(ctx, invoice_id, attempt)
    if row and row["state"] == "declined":
        return {
            "paymentIntentId": row["payment_intent_id"],
            "status": "failed",
            "failureCode": row["failure_code"],
        }
    if row and row["payment_intent_id"]:
        intent = await stripe_call(
            ctx.stripe.v1.payment_intents.retrieve_async(
                row["payment_intent_id"], {"expand": ["latest_charge"]}
            ),
            f"payment intent {row['payment_intent_id']}",
        )
        return _outcome(intent, row.get("failure_code"))
    if row is not None:  # 'creating': an earlier try may have reached Stripe and died before hearing back
        found = await _find_intent(ctx, invoice_id, attempt, row["created_at"])
        if found is not None:
            ctx.log.info("charge %s: adopting %s created by an earlier try", key, found.id)
            await _save_charge(ctx, invoice_id, attempt, found.id, "created", None)
            return _outcome(found, None)
    else:
        async with ctx.tasks_db.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO billing_charges (invoice_id, attempt, idempotency_key, state, amount_minor, currency)"
                    " VALUES (:i, :a, :k, 'creating', :m, :c) ON CONFLICT DO NOTHING"
                ),
                {
                    "i": invoice_id,
                    "a": attempt,
                    "k": key,
                    "m": invoice["totalMinor"],
                    "c": invoice["currency"],
                },
            )
    if not sub.payment_method:
        raise PermanentError(
            f"subscription {sub.id} has no payment method on file; invoice {invoice['number']} "
            "recorded but not charged"
        )
    params = {
        "amount": invoice["totalMinor"],
        "currency": invoice["currency"],
        "payment_method": sub.payment_method,
        "confirm": True,
        "off_session": True,
        "metadata": {
            "invoiceId": invoice_id,
            "invoiceNumber": invoice["number"],
            "attempt": str(attempt),
            "subscriptionId": sub.id,
            "organizationId": sub.organization_id,
        },
    }
    try:
        intent = await ctx.stripe.v1.payment_intents.create_async(params, {"idempotency_key": key})
    except stripe.CardError as error:
        code = error.code or "card_declined"
        # Stripe keeps the declined intent and names it in the error
        declined = getattr(error.error, "payment_intent", None)
        intent_id = declined.id if declined is not None else None
        await _save_charge(ctx, invoice_id, attempt, intent_id, "declined", code)
        return {"paymentIntentId": intent_id, "status": "failed", "failureCode": code}
    except stripe.StripeError as error:  # the row stays 'creating': the retry looks for the intent first
        raise stripe_error(error, f"charge of invoice {invoice['number']}") from None
    await _save_charge(ctx, invoice_id, attempt, intent.id, "created", None)
    return _outcome(intent, None)


async def _save_charge(
    ctx: JobContext, invoice_id: str, attempt: int, intent: str | None, state: str, failure: str | None
) -> None:
    async with ctx.tasks_db.begin() as conn:
        await conn.execute(
            text(
                "UPDATE billing_charges SET payment_intent_id = :p, state = :s, failure_code = :f, updated_at = now()"
                " WHERE invoice_id = :i AND attempt = :a"
            ),
            {"p": intent, "s": state, "f": failure, "i": invoice_id, "a": attempt},
        )


def payment_status(intent: Any) -> tuple[str, int, str | None]:
    """(status, amount refunded, failure code) of a PaymentIntent as our invoices name them."""
    charge = intent.latest_charge if not isinstance(intent.latest_charge, str) else None
    refunded = int(getattr(charge, "amount_refunded", 0) or 0) if charge is not None else 0
    error = plain(intent.last_payment_error)
    if intent.status == "succeeded":
        if refunded and refunded >= int(intent.amount):
            return "refunded", refunded, None
        return ("partially_refunded" if refunded else "paid"), refunded, None
    if intent.status == "processing":
        return "processing", 0, None
    if intent.status == "canceled":
        return "canceled", 0, None
    return "failed", 0, error.get("code") or "payment_failed"


def _outcome(intent: Any, failure: str | None) -> dict[str, Any]:
    status, _, code = payment_status(intent)
    return {"paymentIntentId": intent.id, "status": status, "failureCode": failure or code}


async def record_payment(
    ctx: JobContext, invoice_id: str, outcome: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    if not outcome.get("paymentIntentId"):
        return {}
    body = {
        "paymentIntentId": outcome["paymentIntentId"],
        "status": outcome["status"],
        "failureCode": outcome.get("failureCode"),
        **extra,
    }
    return await ctx.identity.call(
        "POST",
        f"/v1/billing/invoices/{invoice_id}/payment",
        json=body,
        what=f"payment state of invoice {invoice_id}",
    )


# -- the job ------------------------------------------------------------------------------------------------------
async def invoice_generate(ctx: JobContext, p: InvoiceGenerate) -> dict[str, Any]:
    sub = await billing.subscription(ctx, p.subscription_id, p.organization_id)
    if sub.status != "active":
        return {"subscriptionId": sub.id, "skipped": f"subscription is {sub.status}; no invoice, no renewal"}
    resolution = _resolution_for(p)
    refresh = UsageAggregate(
        organizationId=p.organization_id,
        subscriptionId=p.subscription_id,  # type: ignore[call-arg]
        periodStart=p.period_start,
        periodEnd=p.period_end,
        resolution=resolution,
    )
    await aggregate(ctx, refresh)
    lines, total = billing.price(sub, await _usage(ctx, p, resolution))
    invoice = await ctx.identity.call(
        "POST",
        "/v1/billing/invoices",
        json={
            "organizationId": sub.organization_id,
            "subscriptionId": sub.id,
            "periodStart": iso(p.period_start),
            "periodEnd": iso(p.period_end),
            "currency": sub.currency,
            "subtotalMinor": total,
            "totalMinor": total,
            "lines": [line.dump() for line in lines],
        },
        what=f"invoice of {sub.id} {iso(p.period_start)}",
    )

    directory = Path(ctx.settings.MA_INVOICE_DIR)
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    document = directory / f"{invoice['number']}.pdf"
    if invoice.get("documentPath") != str(document.resolve()) or not document.exists():
        digest = await asyncio.to_thread(render_pdf, document, invoice, sub)
        await ctx.identity.call(
            "POST",
            f"/v1/billing/invoices/{invoice['id']}/document",
            json={"path": str(document.resolve()), "sha256": digest},
            what=f"document of invoice {invoice['number']}",
        )

    if invoice["paymentStatus"] in ("paid", "processing", "refunded", "partially_refunded"):
        outcome = {"paymentIntentId": invoice["paymentIntentId"], "status": invoice["paymentStatus"]}
    elif invoice["totalMinor"] <= 0:
        outcome = {"paymentIntentId": None, "status": "paid"}
    else:
        outcome = await charge(ctx, invoice, sub, attempt=1)
        await record_payment(ctx, invoice["id"], outcome)
        if outcome["status"] == "failed":
            ctx.log.warning(
                "invoice %s: payment failed (%s); recorded, retry with payment.retry",
                invoice["number"],
                outcome.get("failureCode"),
            )

    renewal = await schedule_renewal(ctx, p)
    return {
        "invoiceId": invoice["id"],
        "number": invoice["number"],
        "currency": invoice["currency"],
        "totalMinor": invoice["totalMinor"],
        "total": money(invoice["totalMinor"], invoice["currency"]),
        "document": str(document.resolve()),
        "paymentIntentId": outcome.get("paymentIntentId"),
        "paymentStatus": outcome["status"],
        "failureCode": outcome.get("failureCode"),
        **renewal,
    }


def renewal_job_id(subscription_id: str, start: datetime) -> str:
    """Deterministic and free of `:` (LIBRARY_TRAPS §9): one renewal per subscription and period."""
    return f"renewal-{subscription_id}-{start.astimezone(UTC):%Y%m%dT%H%M}"


async def schedule_renewal(ctx: JobContext, p: Period) -> dict[str, Any]:
    months = (p.period_end.year - p.period_start.year) * 12 + p.period_end.month - p.period_start.month
    monthly = months >= 1 and billing.add_months(p.period_start, months) == p.period_end
    nxt_end = (
        billing.add_months(p.period_end, months)
        if monthly
        else p.period_end + (p.period_end - p.period_start)
    )
    job_id = renewal_job_id(p.subscription_id, p.period_end)
    delay_ms = max(0, int((nxt_end - datetime.now(UTC)).total_seconds() * 1000))
    added = await ctx.enqueue(
        QUEUE,
        "invoice.generate",
        {
            "organizationId": p.organization_id,
            "subscriptionId": p.subscription_id,
            "periodStart": iso(p.period_end),
            "periodEnd": iso(nxt_end),
        },
        jobId=job_id,
        delay=delay_ms,
    )
    return {"renewalJobId": job_id, "renewalScheduled": added, "renewalRunsAt": iso(nxt_end)}


HANDLERS: dict[str, Handler] = {
    "invoice.generate": invoice_generate,
}

IDEMPOTENCY_KEYS: IdempotencyKeys = {
    "invoice.generate": ("subscriptionId", "periodStart", "periodEnd"),
}
