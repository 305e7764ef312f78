"""Queue `billing-payment-sync`: Stripe webhooks, payment retries, and the reconciliation sweep.

- `payment.webhook`: the signature is verified when the payload and signature are in the job
  (STRIPE_WEBHOOK_SECRET); a bad one fails the job permanently and changes nothing. Events are applied once per
  Stripe event id (identity keeps the ids). The object is always re-fetched from Stripe, since webhooks arrive in
  any order; the invoice's payment state is then set through identity.
- `payment.retry`: charge a failed invoice again as a new attempt; a repeated retry of the same attempt adopts
  what that attempt already created (our own record, then the PaymentIntent's metadata), never a second charge.
- `payment.reconcile` (scheduled): recent PaymentIntents compared with our invoices; a missed webhook becomes a
  `payment.webhook` job.
Stripe 5xx, 429 and connection errors: the client retries (MA_STRIPE_NETWORK_RETRIES), then the job's backoff
(counted as retries, which ma-top and the exporter show). Card errors and other 4xx: permanent, recorded.
429 from identity: deferred (`Billing payment sync throttled`, logged once per window by the pool).
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field, model_validator
from sqlalchemy import text

from handlers import billing
from handlers.billing import plain, stripe_call
from handlers.billing_invoice import charge, payment_status, record_payment
from handlers.clients.identity import NotFound
from handlers.context import Handler, IdempotencyKeys, JobContext
from handlers.errors import PermanentError
from handlers.payloads import Id, Payload

QUEUE = "billing-payment-sync"
RECONCILE_LOOKBACK_S = 48 * 3600


class PaymentWebhook(Payload):
    stripe_event_id: Id
    type: str = Field(min_length=1, max_length=128)
    payload: str | None = Field(default=None, max_length=1_000_000)
    """The raw request body Stripe signed, when the producer forwards it."""
    signature: str | None = Field(default=None, max_length=4096)
    """The `Stripe-Signature` header that came with `payload`."""
    payment_intent_id: Id | None = None

    @model_validator(mode="after")
    def _pair(self) -> PaymentWebhook:
        if (self.payload is None) != (self.signature is None):
            raise ValueError("payload and signature come together (both or neither)")
        return self


class PaymentRetry(Payload):
    invoice_id: Id


class PaymentReconcile(Payload):
    lookback_hours: int = Field(default=RECONCILE_LOOKBACK_S // 3600, ge=1, le=24 * 31)


def _intent_of(obj: Any) -> str | None:
    kind = obj.get("object") if isinstance(obj, dict) else getattr(obj, "object", None)

    def get(field: str) -> Any:
        return obj.get(field) if isinstance(obj, dict) else getattr(obj, field, None)

    if kind == "payment_intent":
        intent_id = get("id")
        return intent_id if isinstance(intent_id, str) else None
    if kind in ("charge", "refund"):
        intent = get("payment_intent")
        return intent if isinstance(intent, str) else getattr(intent, "id", None)
    return None


def _verified_object(ctx: JobContext, p: PaymentWebhook) -> Any:
    import stripe

    secret = ctx.settings.STRIPE_WEBHOOK_SECRET
    if secret is None:
        raise PermanentError(
            "STRIPE_WEBHOOK_SECRET is not set: cannot verify the webhook signature; nothing changed"
        )
    try:
        event = stripe.Webhook.construct_event(p.payload or "", p.signature, secret.get_secret_value())
    except stripe.SignatureVerificationError:
        raise PermanentError(
            "signature: Stripe webhook signature verification failed; nothing changed"
        ) from None
    except ValueError:
        raise PermanentError("payload: not a Stripe event (invalid JSON); nothing changed") from None
    if event.id != p.stripe_event_id:
        raise PermanentError(
            f"stripeEventId {p.stripe_event_id} is not the signed event ({event.id}); nothing changed"
        )
    return event.data.object


async def payment_webhook(ctx: JobContext, p: PaymentWebhook) -> dict[str, Any]:
    obj = _verified_object(ctx, p) if p.payload is not None else None
    try:
        seen = await ctx.identity.call(
            "GET",
            f"/v1/billing/payment-events/{p.stripe_event_id}",
            what=f"payment event {p.stripe_event_id}",
        )
        return {"stripeEventId": p.stripe_event_id, "duplicate": True, "invoiceId": seen["invoiceId"]}
    except NotFound:
        pass
    intent_id = p.payment_intent_id or (_intent_of(obj) if obj is not None else None)
    if intent_id is None:
        event = await stripe_call(
            ctx.stripe.v1.events.retrieve_async(p.stripe_event_id), f"event {p.stripe_event_id}"
        )
        intent_id = _intent_of(event.data.object)
    if intent_id is None:
        return {"stripeEventId": p.stripe_event_id, "ignored": f"{p.type} is not about a PaymentIntent"}
    intent = await stripe_call(
        ctx.stripe.v1.payment_intents.retrieve_async(intent_id, {"expand": ["latest_charge"]}),
        f"payment intent {intent_id}",
    )
    invoice_id = plain(intent.metadata).get("invoiceId")
    if not invoice_id:
        raise PermanentError(
            f"payment intent {intent_id} carries no invoiceId metadata: not one of our charges"
        )
    status, refunded, code = payment_status(intent)
    answer = await record_payment(
        ctx,
        invoice_id,
        {"paymentIntentId": intent_id, "status": status, "failureCode": code},
        stripeEventId=p.stripe_event_id,
        type=p.type,
        amountRefundedMinor=refunded,
    )
    return {
        "stripeEventId": p.stripe_event_id,
        "duplicate": bool(answer.get("duplicate")),
        "invoiceId": invoice_id,
        "paymentIntentId": intent_id,
        "paymentStatus": status,
        "amountRefundedMinor": refunded,
    }


async def payment_retry(ctx: JobContext, p: PaymentRetry) -> dict[str, Any]:
    try:
        invoice = await ctx.identity.call(
            "GET", f"/v1/billing/invoices/{p.invoice_id}", what=f"invoice {p.invoice_id}"
        )
    except NotFound:
        raise PermanentError(f"invoiceId {p.invoice_id} does not exist at identity") from None
    if invoice["paymentStatus"] in ("paid", "processing", "refunded", "partially_refunded"):
        return {"invoiceId": p.invoice_id, "paymentStatus": invoice["paymentStatus"], "charged": False}
    sub = await billing.subscription(ctx, invoice["subscriptionId"], invoice["organizationId"])
    async with ctx.tasks_db.connect() as conn:
        latest = (
            await conn.execute(
                text(
                    "SELECT attempt, state FROM billing_charges WHERE invoice_id = :i"
                    " ORDER BY attempt DESC LIMIT 1"
                ),
                {"i": p.invoice_id},
            )
        ).first()
    if latest is None:
        attempt = 1
    elif latest.state == "declined" or (latest.state == "created" and invoice["paymentStatus"] == "failed"):
        attempt = latest.attempt + 1  # the last attempt is over: a new one
    else:
        attempt = latest.attempt  # the last attempt may have charged: finish it, never start a second
    outcome = await charge(ctx, invoice, sub, attempt)
    await record_payment(ctx, p.invoice_id, outcome)
    if outcome["status"] == "failed":
        raise PermanentError(
            f"payment of invoice {invoice['number']} declined ({outcome.get('failureCode')}) on "
            f"attempt {attempt}; recorded on the invoice"
        )
    return {"invoiceId": p.invoice_id, "attempt": attempt, "charged": True, **outcome}


SWEEPING: set[str] = set()
"""Ids of the reconciliation sweeps running in this slot (at most one: a second compares the same window again)."""


async def payment_reconcile(ctx: JobContext, p: PaymentReconcile) -> dict[str, Any]:
    """One sweep at a time per slot: a sweep that finds another running in its slot returns at once (the one
    running reads the same window; what it misses, the next scheduled sweep sees), so a slot holds one page of
    PaymentIntents however many sweeps are added."""
    if SWEEPING:
        return {"checked": 0, "enqueued": 0, "skipped": f"sweep {min(SWEEPING)} is running in this slot"}
    SWEEPING.add(ctx.job_id)
    try:
        return await _sweep(ctx, p)
    finally:
        SWEEPING.discard(ctx.job_id)


async def _sweep(ctx: JobContext, p: PaymentReconcile) -> dict[str, Any]:
    """Recent PaymentIntents vs our invoices: what a lost webhook left behind becomes a sync job.

    Stripe is asked for the lookback window only (`created[gte]`), a page of 100 at a time, and each intent is
    reduced to what the comparison needs (attempt, id, status) as its page goes by: a PaymentIntent as a Stripe
    object is tens of KB (~37 KB as the double returns them), so holding the window's intents whole would make
    each sweep's memory, and the slot's RSS (which does not come back after the peak), grow with the number of
    payments."""
    since = int(time.time()) - p.lookback_hours * 3600
    latest: dict[str, tuple[int, str, str]] = {}  # invoice id -> (attempt, intent id, status) of its latest
    # the charge expanded: Stripe lists it as an id otherwise, and a refund is only seen through it
    params: dict[str, Any] = {"limit": 100, "created": {"gte": since}, "expand": ["data.latest_charge"]}
    while True:
        page = await stripe_call(ctx.stripe.v1.payment_intents.list_async(params), "payment intents list")
        for intent in page.data:
            meta = plain(intent.metadata)
            invoice_id = meta.get("invoiceId")
            if invoice_id and intent.created >= since:
                attempt = int(meta.get("attempt", 0))
                best = latest.get(invoice_id)
                if best is None or attempt > best[0]:
                    latest[invoice_id] = (attempt, intent.id, payment_status(intent)[0])
        if not page.has_more or not page.data:
            break
        params["starting_after"] = page.data[-1].id
    if not latest:
        return {"checked": 0, "enqueued": 0}
    async with ctx.identity_db.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT id, payment_status, payment_intent_id FROM invoices WHERE id = ANY(:ids)"),
                {"ids": list(latest)},
            )
        ).all()
    ours = {r.id: (r.payment_status, r.payment_intent_id) for r in rows}
    enqueued = []
    for invoice_id, (_, intent_id, status) in latest.items():
        if (
            invoice_id in ours
            and ours[invoice_id] != (status, intent_id)
            and not ours[invoice_id][0].endswith("refunded")
        ):
            key = f"reconcile-{intent_id}-{status}"
            if await ctx.enqueue(
                QUEUE,
                "payment.webhook",
                {"stripeEventId": key.replace("-", "_"), "type": "reconcile", "paymentIntentId": intent_id},
                jobId=key,
            ):
                enqueued.append(key)
    if enqueued:
        ctx.log.info(
            "payment reconciliation: %d of %d recent payments differ from our invoices; syncs enqueued",
            len(enqueued),
            len(latest),
        )
        ctx.event(
            "scheduled-task",
            f"Payment reconciliation enqueued {len(enqueued)} sync(s)",
            items=str(len(enqueued)),
        )
    return {"checked": len(latest), "enqueued": len(enqueued), "jobIds": enqueued}


HANDLERS: dict[str, Handler] = {
    "payment.webhook": payment_webhook,
    "payment.retry": payment_retry,
    "payment.reconcile": payment_reconcile,
}

IDEMPOTENCY_KEYS: IdempotencyKeys = {
    "payment.webhook": ("stripeEventId",),
    "payment.retry": ("invoiceId",),
}
