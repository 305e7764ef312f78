"""Billing fixtures' building blocks shared by the billing tests and the staged Stripe incidents."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import stripe as stripe_sdk


def stripe_client(stripe: Any) -> stripe_sdk.StripeClient:
    """A client of the Stripe double (`tests.support.doubles.StripeDouble`), as the tests' own Stripe access."""
    return stripe_sdk.StripeClient(stripe.SECRET_KEY, base_addresses={"api": stripe.url})


async def paid_invoice(identity_db: Any, stripe: Any, amount: int) -> tuple[str, str]:
    """An invoice recorded at identity (still unpaid there) and a PaymentIntent that paid it at Stripe."""
    invoice_id = f"in_t{uuid.uuid4().hex[:8]}"
    await identity_db.execute(
        "INSERT INTO invoices (id, number, organization_id, subscription_id, period_start, period_end, currency,"
        " subtotal_minor, total_minor, lines) VALUES ($1, $1, 'org_globex', 'sub_globex', now(), now() + interval"
        " '1 day', 'usd', $2, $2, '[]')",
        invoice_id,
        amount,
    )
    intent = stripe_client(stripe).v1.payment_intents.create(
        {
            "amount": amount,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
            "metadata": {"invoiceId": invoice_id},
        }
    )
    return invoice_id, intent.id


def signed(secret: str, event: dict[str, Any]) -> tuple[str, str]:
    """A webhook body and its Stripe-Signature header, as Stripe computes them."""
    payload = json.dumps(event)
    ts = int(time.time())
    mac = hmac.new(secret.encode(), f"{ts}.{payload}".encode(), hashlib.sha256).hexdigest()
    return payload, f"t={ts},v1={mac}"
