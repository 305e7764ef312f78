"""The billing API: usage rollups replaced per period, invoices recorded once per subscription and period,
their documents, and payment states applied once per Stripe event."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
from aiohttp import web

from devstack.identity_double.auth import requires_session
from devstack.identity_double.state import STATE, Session, error


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@requires_session
async def replace_rollups(request: web.Request, session: Session) -> web.Response:
    state = request.app[STATE]
    body = await request.json()
    try:
        sub, resolution = body["subscriptionId"], body["resolution"]
        start, end = _ts(body["periodStart"]), _ts(body["periodEnd"])
        features = body.get("features")
        rows = [
            (
                r["key"],
                body["organizationId"],
                sub,
                r["feature"],
                resolution,
                _ts(r["bucketStart"]),
                _ts(r["bucketEnd"]),
                Decimal(str(r["quantity"])),
                int(r["eventCount"]),
            )
            for r in body["rollups"]
        ]
    except (KeyError, TypeError, ValueError, ArithmeticError) as problem:
        return error(400, "invalid_rollups", f"{type(problem).__name__}: {problem}")
    async with state.db.acquire() as conn, conn.transaction():
        if await conn.fetchval("SELECT 1 FROM subscriptions WHERE id = $1", sub) is None:
            return error(404, "subscription_not_found")
        removed = await conn.execute(
            "DELETE FROM usage_rollups WHERE subscription_id = $1 AND resolution = $2 AND bucket_start >= $3"
            " AND bucket_start < $4 AND ($5::text[] IS NULL OR feature = ANY($5::text[])) AND NOT key = ANY($6::text[])",
            sub,
            resolution,
            start,
            end,
            features,
            [r[0] for r in rows],
        )
        await conn.executemany(
            "INSERT INTO usage_rollups (key, organization_id, subscription_id, feature, resolution, bucket_start,"
            " bucket_end, quantity, event_count) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " ON CONFLICT (key) DO UPDATE SET quantity = EXCLUDED.quantity, event_count = EXCLUDED.event_count,"
            " writes = usage_rollups.writes + 1, updated_at = now()",
            rows,
        )
    state.stats["rollups upserted"] += len(rows)
    return web.json_response({"upserted": len(rows), "removed": int(removed.split()[-1])})


def _invoice_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "number": row["number"],
        "organizationId": row["organization_id"],
        "subscriptionId": row["subscription_id"],
        "periodStart": row["period_start"].isoformat(),
        "periodEnd": row["period_end"].isoformat(),
        "currency": row["currency"],
        "subtotalMinor": row["subtotal_minor"],
        "totalMinor": row["total_minor"],
        "lines": json.loads(row["lines"]),
        "documentPath": row["document_path"],
        "paymentStatus": row["payment_status"],
        "paymentIntentId": row["payment_intent_id"],
        "amountRefundedMinor": row["amount_refunded_minor"],
        "failureCode": row["failure_code"],
    }


@requires_session
async def record_invoice(request: web.Request, session: Session) -> web.Response:
    """Idempotent per (subscription, period): a repeat returns the first invoice, unchanged."""
    state = request.app[STATE]
    body = await request.json()
    try:
        values = (
            body["organizationId"],
            body["subscriptionId"],
            _ts(body["periodStart"]),
            _ts(body["periodEnd"]),
            body["currency"],
            int(body["subtotalMinor"]),
            int(body["totalMinor"]),
            json.dumps(body["lines"]),
        )
    except (KeyError, TypeError, ValueError) as problem:
        return error(400, "invalid_invoice", f"{type(problem).__name__}: {problem}")
    async with state.db.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO invoices (id, number, organization_id, subscription_id, period_start, period_end, currency,"
            " subtotal_minor, total_minor, lines) SELECT 'in_' || substr(md5(random()::text), 1, 14),"
            " 'INV-' || nextval('invoice_number_seq'), $1, $2, $3, $4, $5, $6, $7, $8::jsonb"
            " ON CONFLICT (subscription_id, period_start, period_end) DO NOTHING RETURNING *",
            *values,
        )
        created = row is not None
        if row is None:
            row = await conn.fetchrow(
                "SELECT * FROM invoices WHERE subscription_id = $1 AND period_start = $2 AND period_end = $3",
                values[1],
                values[2],
                values[3],
            )
    state.stats["invoices created" if created else "invoice replays"] += 1
    return web.json_response({**_invoice_json(row), "created": created})


@requires_session
async def get_invoice(request: web.Request, session: Session) -> web.Response:
    row = await request.app[STATE].db.fetchrow(
        "SELECT * FROM invoices WHERE id = $1", request.match_info["invoice_id"]
    )
    if row is None:
        return error(404, "invoice_not_found")
    return web.json_response(_invoice_json(row))


@requires_session
async def invoice_document(request: web.Request, session: Session) -> web.Response:
    body = await request.json()
    row = await request.app[STATE].db.fetchrow(
        "UPDATE invoices SET document_path = $2, document_sha256 = $3, updated_at = now() WHERE id = $1 RETURNING *",
        request.match_info["invoice_id"],
        body.get("path"),
        body.get("sha256"),
    )
    if row is None:
        return error(404, "invoice_not_found")
    return web.json_response(_invoice_json(row))


PAYMENT_STATUSES = ("processing", "paid", "failed", "refunded", "partially_refunded", "canceled")


@requires_session
async def invoice_payment(request: web.Request, session: Session) -> web.Response:
    """Set an invoice's payment state. With a stripeEventId the event is applied once (a repeat is a no-op
    answering duplicate: true); an event about another PaymentIntent than the invoice's is refused (409)."""
    state = request.app[STATE]
    body = await request.json()
    status, intent, event_id = body.get("status"), body.get("paymentIntentId"), body.get("stripeEventId")
    if status not in PAYMENT_STATUSES or not intent:
        return error(
            400, "invalid_payment", f"status must be one of {', '.join(PAYMENT_STATUSES)}; paymentIntentId"
        )
    invoice_id = request.match_info["invoice_id"]
    async with state.db.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT * FROM invoices WHERE id = $1 FOR UPDATE", invoice_id)
        if row is None:
            return error(404, "invoice_not_found")
        if event_id:
            fresh = await conn.fetchval(
                "INSERT INTO payment_events (stripe_event_id, invoice_id, type, payment_status) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (stripe_event_id) DO NOTHING RETURNING stripe_event_id",
                event_id,
                invoice_id,
                body.get("type") or "unknown",
                status,
            )
            if fresh is None:
                state.stats["payment event duplicates"] += 1
                return web.json_response({**_invoice_json(row), "duplicate": True})
        row = await conn.fetchrow(
            "UPDATE invoices SET payment_status = $2, payment_intent_id = $3, amount_refunded_minor = $4,"
            " failure_code = $5, updated_at = now() WHERE id = $1 RETURNING *",
            invoice_id,
            status,
            intent,
            int(body.get("amountRefundedMinor") or 0),
            body.get("failureCode"),
        )
    state.stats[f"payment {status}"] += 1
    return web.json_response({**_invoice_json(row), "duplicate": False})


@requires_session
async def get_payment_event(request: web.Request, session: Session) -> web.Response:
    row = await request.app[STATE].db.fetchrow(
        "SELECT * FROM payment_events WHERE stripe_event_id = $1", request.match_info["event_id"]
    )
    if row is None:
        return error(404, "payment_event_not_found")
    return web.json_response(
        {
            "stripeEventId": row["stripe_event_id"],
            "invoiceId": row["invoice_id"],
            "type": row["type"],
            "paymentStatus": row["payment_status"],
        }
    )
