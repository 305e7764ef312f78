"""The identity-service double: a real HTTP server over the identity database.

What the worker's clients call, with the behaviours that matter to them:
- tokens: `POST /v1/auth/token` (service key) -> short-lived access token + refresh token; `POST /v1/auth/refresh`;
  `POST /v1/admin/sessions/{id}/rotate` (TokenService.rotateSession). A token's organization scope is the
  snapshot taken when its session was issued or rotated: an organization created later answers
  403 `organization_scope_mismatch` until the session is rotated.
- lookups: organizations, tenants, invitations; `POST /v1/tasks/context` (fetchTasksContext).
- admin: session cleanup, impersonation cleanup (with audit events), invitation marked sent; bulk item changes
  `POST /v1/admin/{users|organizations}/{id}/{activate|suspend}` with a required `Idempotency-Key` (a replayed
  key answers the first result and changes nothing; each applied change is one audit event carrying the key);
  `GET /v1/users/{id}`.
- billing: `POST /v1/billing/rollups/replace` (a period's rollups, each upserted by its key; rollups of that
  period missing from the set are removed, so re-running a period replaces, never adds),
  `POST /v1/billing/invoices` (idempotent per subscription and period: the first record wins and is returned),
  `GET /v1/billing/invoices/{id}`, `POST /v1/billing/invoices/{id}/document`,
  `POST /v1/billing/invoices/{id}/payment` (a Stripe event id is applied once: a repeat answers `duplicate`),
  `GET /v1/billing/payment-events/{event_id}`.
- Supabase auth admin: `POST /auth/v1/invite`, `GET /auth/v1/admin/users/{id}` (apikey + bearer service key).
- rate limiting from IDENTITY_RATE_LIMIT_MAX / IDENTITY_RATE_LIMIT_TIME_WINDOW (ms): 429 + Retry-After.
- test hooks: `POST /__faults` (the next N requests, or all for S seconds, answer 429/401/403/500 or hang),
  `POST /__ratelimit`,
  `POST /__latency` (delay answers under a path prefix),
  `GET /__stats`, `POST /__reset`.

Run: python -m devstack.identity_double --port P --database-url URL [--service-key K] [--token-ttl S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import secrets
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
from aiohttp import web

log = logging.getLogger("identity-double")


@dataclass
class Session:
    id: str
    refresh_token: str
    orgs: frozenset[str]


@dataclass
class Fault:
    status: int | str
    remaining: int
    path: str = ""
    retry_after: float = 1.0
    until: float = 0.0
    """Monotonic deadline: the fault answers every matching request until then (besides `remaining`)."""


@dataclass
class State:
    db: asyncpg.Pool
    service_key: str
    token_ttl: float
    rate_max: int = 0
    rate_window_ms: int = 60_000
    window_start: float = 0.0
    window_count: int = 0
    sessions: dict[str, Session] = field(default_factory=dict)
    access: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> (session id, expires)
    faults: list[Fault] = field(default_factory=list)
    latency: dict[str, float] = field(default_factory=dict)  # path prefix -> seconds
    stats: Counter[str] = field(default_factory=Counter)


STATE = web.AppKey("state", State)


def error(status: int, code: str, message: str = "") -> web.Response:
    return web.json_response({"error": code, "message": message or code}, status=status)


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    return header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""


@web.middleware
async def gatekeeper(request: web.Request, handler: Any) -> web.StreamResponse:
    """Faults, rate limit and stats for every API call (not /__ hooks, not /healthz)."""
    state = request.app[STATE]
    path = request.path
    if path.startswith("/__") or path == "/healthz":
        return await handler(request)
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else path
    state.stats[f"{request.method} {route}"] += 1
    now = time.monotonic()
    for fault in state.faults:
        if (fault.remaining > 0 or now < fault.until) and path.startswith(fault.path):
            fault.remaining = max(0, fault.remaining - 1)
            state.stats[f"fault {fault.status}"] += 1
            if fault.status == "hang":
                await asyncio.sleep(30)
            if fault.status == 429:
                return web.json_response(
                    {"error": "rate_limited"},
                    status=429,
                    headers={"Retry-After": str(math.ceil(fault.retry_after))},
                )
            if fault.status == 403:
                return error(403, "organization_scope_mismatch")
            return error(int(fault.status), "injected_fault")
    if state.rate_max > 0:
        now = time.monotonic()
        if now - state.window_start >= state.rate_window_ms / 1000:
            state.window_start, state.window_count = now, 0
        state.window_count += 1
        if state.window_count > state.rate_max:
            state.stats["rate limited"] += 1
            wait = max(0.0, state.window_start + state.rate_window_ms / 1000 - now)
            return web.json_response(
                {"error": "rate_limited"}, status=429, headers={"Retry-After": str(max(1, math.ceil(wait)))}
            )
    for prefix, delay in state.latency.items():
        if path.startswith(prefix):
            await asyncio.sleep(delay)
    response = await handler(request)
    state.stats[f"{response.status}"] += 1
    return response


# -- tokens ---------------------------------------------------------------------------------------
async def _all_orgs(state: State) -> frozenset[str]:
    return frozenset(r["id"] for r in await state.db.fetch("SELECT id FROM organizations"))


def _issue(state: State, session: Session) -> web.Response:
    token = "at_" + secrets.token_urlsafe(18)
    state.access[token] = (session.id, time.time() + state.token_ttl)
    return web.json_response(
        {
            "accessToken": token,
            "refreshToken": session.refresh_token,
            "expiresIn": state.token_ttl,
            "sessionId": session.id,
        }
    )


def _service_key_ok(request: web.Request) -> bool:
    state = request.app[STATE]
    return secrets.compare_digest(_bearer(request), state.service_key)


async def issue_token(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not _service_key_ok(request):
        return error(401, "invalid_service_key")
    session = Session(
        "sess_" + secrets.token_hex(6), "rt_" + secrets.token_urlsafe(18), await _all_orgs(state)
    )
    state.sessions[session.id] = session
    return _issue(state, session)


async def refresh_token(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await request.json()
    session = next((s for s in state.sessions.values() if s.refresh_token == body.get("refreshToken")), None)
    if session is None:
        return error(401, "invalid_refresh_token")
    return _issue(state, session)  # same session, same scope snapshot: claims are refreshed only by rotation


async def rotate_session(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not _service_key_ok(request):
        return error(401, "invalid_service_key")
    session = state.sessions.get(request.match_info["session_id"])
    if session is None:
        return error(404, "session_not_found")
    session.refresh_token = "rt_" + secrets.token_urlsafe(18)  # stale refresh tokens are revoked
    session.orgs = await _all_orgs(state)
    for token, (sid, _) in list(state.access.items()):
        if sid == session.id:
            del state.access[token]
    state.stats["sessions rotated"] += 1
    return _issue(state, session)


def _session_of(request: web.Request) -> Session | web.Response:
    state = request.app[STATE]
    token = _bearer(request)
    entry = state.access.get(token)
    if entry is None:
        return error(401, "invalid_token")
    sid, expires = entry
    if time.time() >= expires:
        return error(401, "token_expired")
    return state.sessions[sid]


def _scoped(request: web.Request, org_id: str) -> Session | web.Response:
    session = _session_of(request)
    if isinstance(session, Session) and org_id not in session.orgs:
        return error(403, "organization_scope_mismatch", f"token is not scoped to organization {org_id}")
    return session


# -- lookups ----------------------------------------------------------------------------------------
async def healthz(request: web.Request) -> web.Response:
    await request.app[STATE].db.fetchval("SELECT 1")
    return web.json_response({"status": "ok"})


async def get_organization(request: web.Request) -> web.Response:
    org_id = request.match_info["org_id"]
    if isinstance(session := _scoped(request, org_id), web.Response):
        return session
    row = await request.app[STATE].db.fetchrow(
        "SELECT id, name, slug, status FROM organizations WHERE id = $1", org_id
    )
    if row is None:
        return error(404, "organization_not_found")
    return web.json_response(dict(row))


async def get_tenant(request: web.Request) -> web.Response:
    if isinstance(session := _session_of(request), web.Response):
        return session
    row = await request.app[STATE].db.fetchrow(
        "SELECT id, organization_id, name, status FROM tenants WHERE id = $1", request.match_info["tenant_id"]
    )
    if row is None:
        return error(404, "tenant_not_found")
    return web.json_response(
        {
            "id": row["id"],
            "organizationId": row["organization_id"],
            "name": row["name"],
            "status": row["status"],
        }
    )


async def tasks_context(request: web.Request) -> web.Response:
    """fetchTasksContext: the org/tenant context is required and checked (tenant guardrail)."""
    body = await request.json()
    context = body.get("context") or {}
    org_id, tenant_id = context.get("organizationId"), context.get("tenantId")
    if not org_id:
        return error(400, "context_required", "context.organizationId is required")
    if isinstance(session := _scoped(request, org_id), web.Response):
        return session
    db = request.app[STATE].db
    org = await db.fetchrow("SELECT id, name, status FROM organizations WHERE id = $1", org_id)
    if org is None:
        return error(404, "organization_not_found")
    tenant = None
    if tenant_id:
        tenant = await db.fetchrow("SELECT id, organization_id FROM tenants WHERE id = $1", tenant_id)
        if tenant is None:
            return error(404, "tenant_not_found")
        if tenant["organization_id"] != org_id:
            return error(
                403, "tenant_not_in_organization", f"tenant {tenant_id} is not in organization {org_id}"
            )
    product = body.get("productSlug") or "tasks"
    rows = await db.fetch(
        "SELECT feature, quota FROM product_default_entitlements WHERE product_slug = $1", product
    )
    return web.json_response(
        {
            "organization": {"id": org["id"], "name": org["name"], "status": org["status"]},
            "tenant": {"id": tenant["id"], "organizationId": tenant["organization_id"]} if tenant else None,
            "entitlements": [{"feature": r["feature"], "quota": r["quota"]} for r in rows],
        }
    )


async def get_invitation(request: web.Request) -> web.Response:
    if isinstance(session := _session_of(request), web.Response):
        return session
    row = await request.app[STATE].db.fetchrow(
        "SELECT id, organization_id, tenant_id, email, status FROM invitations WHERE id = $1",
        request.match_info["invitation_id"],
    )
    if row is None:
        return error(404, "invitation_not_found")
    return web.json_response(
        {
            "id": row["id"],
            "organizationId": row["organization_id"],
            "tenantId": row["tenant_id"],
            "email": row["email"],
            "status": row["status"],
        }
    )


async def mark_invitation_sent(request: web.Request) -> web.Response:
    if isinstance(session := _session_of(request), web.Response):
        return session
    row = await request.app[STATE].db.fetchrow(
        "UPDATE invitations SET status = 'sent', sent_at = coalesce(sent_at, now()) WHERE id = $1 RETURNING status",
        request.match_info["invitation_id"],
    )
    if row is None:
        return error(404, "invitation_not_found")
    return web.json_response({"id": request.match_info["invitation_id"], "status": row["status"]})


async def cleanup_sessions(request: web.Request) -> web.Response:
    if isinstance(session := _session_of(request), web.Response):
        return session
    body = await request.json() if request.can_read_body else {}
    days = int(body.get("olderThanDays", 30))
    result = await request.app[STATE].db.execute(
        "DELETE FROM sessions WHERE expires_at < now() - make_interval(days => $1)", days
    )
    return web.json_response({"deleted": int(result.split()[-1]), "olderThanDays": days})


async def cleanup_impersonation(request: web.Request) -> web.Response:
    if isinstance(session := _session_of(request), web.Response):
        return session
    async with request.app[STATE].db.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "UPDATE impersonation_tokens SET retired_at = now() WHERE expires_at < now() AND retired_at IS NULL"
            " RETURNING id, actor_id, user_id"
        )
        await conn.executemany(
            "INSERT INTO audit_events (action, actor_id, target_id, details) VALUES"
            " ('impersonation.retired', $1, $2, $3::jsonb)",
            [(r["actor_id"], r["user_id"], json.dumps({"tokenId": r["id"]})) for r in rows],
        )
    return web.json_response({"retired": len(rows), "tokenIds": [r["id"] for r in rows]})


async def get_user(request: web.Request) -> web.Response:
    if isinstance(session := _session_of(request), web.Response):
        return session
    row = await request.app[STATE].db.fetchrow(
        "SELECT id, email, status, is_super_admin FROM users WHERE id = $1", request.match_info["user_id"]
    )
    if row is None:
        return error(404, "user_not_found")
    return web.json_response(
        {
            "id": row["id"],
            "email": row["email"],
            "status": row["status"],
            "isSuperAdmin": row["is_super_admin"],
        }
    )


BULK_TARGETS = {"users": "user", "organizations": "organization"}


async def bulk_item(request: web.Request) -> web.Response:
    """Activate or suspend one user or organization, idempotent per Idempotency-Key: the key is stored with
    the audit event of the change, and a replay answers the first result without changing anything."""
    if isinstance(session := _session_of(request), web.Response):
        return session
    state = request.app[STATE]
    target, item_id, op = (
        request.match_info["target"],
        request.match_info["item_id"],
        request.match_info["op"],
    )
    if target not in BULK_TARGETS or op not in ("activate", "suspend"):
        return error(404, "not_found")
    key = request.headers.get("Idempotency-Key", "")
    if not key:
        return error(400, "idempotency_key_required", "bulk changes need an Idempotency-Key header")
    body = await request.json() if request.can_read_body else {}
    kind, new_status = BULK_TARGETS[target], "active" if op == "activate" else "suspended"
    async with state.db.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", key)
        earlier = await conn.fetchrow(
            "SELECT details FROM audit_events WHERE details->>'idempotencyKey' = $1", key
        )
        if earlier is not None:
            state.stats["idempotent replays"] += 1
            details = json.loads(earlier["details"])
            return web.json_response(details["result"], headers={"Idempotent-Replayed": "true"})
        extra = ", is_super_admin" if target == "users" else ""
        row = await conn.fetchrow(f"SELECT id, status{extra} FROM {target} WHERE id = $1 FOR UPDATE", item_id)
        if row is None:
            return error(404, f"{kind}_not_found", f"{kind} {item_id} does not exist")
        if target == "users" and op == "suspend" and row["is_super_admin"]:
            return error(409, "cannot_suspend_super_admin", f"user {item_id} is a super admin")
        await conn.execute(f"UPDATE {target} SET status = $2 WHERE id = $1", item_id, new_status)
        result = {
            "id": item_id,
            "status": new_status,
            "previousStatus": row["status"],
            "changed": row["status"] != new_status,
        }
        details = {
            "idempotencyKey": key,
            "bulkJobId": body.get("bulkJobId"),
            "reason": body.get("reason"),
            "result": result,
        }
        await conn.execute(
            "INSERT INTO audit_events (action, actor_id, target_id, details) VALUES ($1, $2, $3, $4)",
            f"{kind}.{op}",
            body.get("actorId"),
            item_id,
            json.dumps(details),
        )
    state.stats[f"bulk {op} applied"] += 1
    return web.json_response(result)


# -- billing ----------------------------------------------------------------------------------------------
def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def replace_rollups(request: web.Request) -> web.Response:
    if isinstance(session := _session_of(request), web.Response):
        return session
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


def _invoice_json(row: Any) -> dict[str, Any]:
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


async def record_invoice(request: web.Request) -> web.Response:
    """Idempotent per (subscription, period): a repeat returns the first invoice, unchanged."""
    if isinstance(session := _session_of(request), web.Response):
        return session
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


async def get_invoice(request: web.Request) -> web.Response:
    if isinstance(session := _session_of(request), web.Response):
        return session
    row = await request.app[STATE].db.fetchrow(
        "SELECT * FROM invoices WHERE id = $1", request.match_info["invoice_id"]
    )
    if row is None:
        return error(404, "invoice_not_found")
    return web.json_response(_invoice_json(row))


async def invoice_document(request: web.Request) -> web.Response:
    if isinstance(session := _session_of(request), web.Response):
        return session
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


async def invoice_payment(request: web.Request) -> web.Response:
    """Set an invoice's payment state. With a stripeEventId the event is applied once (a repeat is a no-op
    answering duplicate: true); an event about another PaymentIntent than the invoice's is refused (409)."""
    if isinstance(session := _session_of(request), web.Response):
        return session
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


async def get_payment_event(request: web.Request) -> web.Response:
    if isinstance(session := _session_of(request), web.Response):
        return session
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


# -- Supabase auth admin ------------------------------------------------------------------------------
def _supabase_ok(request: web.Request) -> bool:
    state = request.app[STATE]
    return secrets.compare_digest(request.headers.get("apikey", ""), state.service_key) and _service_key_ok(
        request
    )


async def supabase_invite(request: web.Request) -> web.Response:
    if not _supabase_ok(request):
        return web.json_response({"msg": "Invalid API key"}, status=401)
    body = await request.json()
    email = (body.get("email") or "").strip().lower()
    if not email:
        return web.json_response({"code": 400, "msg": "email is required"}, status=400)
    row = await request.app[STATE].db.fetchrow(
        "INSERT INTO auth_users (email, metadata) VALUES ($1, $2::jsonb) ON CONFLICT (email) DO NOTHING"
        " RETURNING id, email, invited_at",
        email,
        json.dumps(body.get("data") or {}),
    )
    if row is None:
        return web.json_response(
            {
                "code": 422,
                "error_code": "email_exists",
                "msg": "A user with this email address has already been registered",
            },
            status=422,
        )
    return web.json_response(
        {"id": str(row["id"]), "email": row["email"], "invited_at": row["invited_at"].isoformat()}
    )


async def supabase_get_user(request: web.Request) -> web.Response:
    if not _supabase_ok(request):
        return web.json_response({"msg": "Invalid API key"}, status=401)
    try:
        row = await request.app[STATE].db.fetchrow(
            "SELECT id, email, invited_at FROM auth_users WHERE id = $1::uuid", request.match_info["user_id"]
        )
    except asyncpg.DataError:
        row = None
    if row is None:
        return web.json_response({"code": 404, "msg": "User not found"}, status=404)
    return web.json_response(
        {"id": str(row["id"]), "email": row["email"], "invited_at": row["invited_at"].isoformat()}
    )


# -- test hooks ---------------------------------------------------------------------------------------
async def add_fault(request: web.Request) -> web.Response:
    body = await request.json()
    seconds = float(body.get("seconds", 0))
    fault = Fault(
        body["status"],
        int(body.get("count", 0 if seconds else 1)),
        body.get("path", ""),
        float(body.get("retryAfter", 1)),
        time.monotonic() + seconds if seconds else 0.0,
    )
    request.app[STATE].faults.append(fault)
    return web.json_response({"queued": len(request.app[STATE].faults)})


async def set_rate_limit(request: web.Request) -> web.Response:
    body = await request.json()
    state = request.app[STATE]
    state.rate_max, state.rate_window_ms = int(body.get("max", 0)), int(body.get("windowMs", 60_000))
    state.window_start, state.window_count = time.monotonic(), 0
    return web.json_response({"max": state.rate_max, "windowMs": state.rate_window_ms})


async def set_latency(request: web.Request) -> web.Response:
    body = await request.json()
    state = request.app[STATE]
    if float(body.get("seconds", 0)) > 0:
        state.latency[body.get("path", "")] = float(body["seconds"])
    else:
        state.latency.pop(body.get("path", ""), None)
    return web.json_response(state.latency)


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(dict(request.app[STATE].stats))


async def reset(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.faults.clear()
    state.stats.clear()
    state.latency.clear()
    state.rate_max = 0
    return web.json_response({"reset": True})


def build_app(state: State) -> web.Application:
    app = web.Application(middlewares=[gatekeeper])
    app[STATE] = state
    r = app.router
    r.add_get("/healthz", healthz)
    r.add_post("/v1/auth/token", issue_token)
    r.add_post("/v1/auth/refresh", refresh_token)
    r.add_post("/v1/admin/sessions/{session_id}/rotate", rotate_session)
    r.add_get("/v1/organizations/{org_id}", get_organization)
    r.add_get("/v1/tenants/{tenant_id}", get_tenant)
    r.add_post("/v1/tasks/context", tasks_context)
    r.add_get("/v1/invitations/{invitation_id}", get_invitation)
    r.add_post("/v1/invitations/{invitation_id}/sent", mark_invitation_sent)
    r.add_post("/v1/admin/sessions/cleanup", cleanup_sessions)
    r.add_post("/v1/admin/impersonation/cleanup", cleanup_impersonation)
    r.add_get("/v1/users/{user_id}", get_user)
    r.add_post("/v1/admin/{target}/{item_id}/{op}", bulk_item)
    r.add_post("/v1/billing/rollups/replace", replace_rollups)
    r.add_post("/v1/billing/invoices", record_invoice)
    r.add_get("/v1/billing/invoices/{invoice_id}", get_invoice)
    r.add_post("/v1/billing/invoices/{invoice_id}/document", invoice_document)
    r.add_post("/v1/billing/invoices/{invoice_id}/payment", invoice_payment)
    r.add_get("/v1/billing/payment-events/{event_id}", get_payment_event)
    r.add_post("/auth/v1/invite", supabase_invite)
    r.add_get("/auth/v1/admin/users/{user_id}", supabase_get_user)
    r.add_post("/__faults", add_fault)
    r.add_post("/__ratelimit", set_rate_limit)
    r.add_post("/__latency", set_latency)
    r.add_get("/__stats", get_stats)
    r.add_post("/__reset", reset)
    return app


async def serve(port: int, database_url: str, service_key: str, token_ttl: float) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=10)
    state = State(
        pool,
        service_key,
        token_ttl,
        rate_max=int(os.environ.get("IDENTITY_RATE_LIMIT_MAX", "0") or 0),
        rate_window_ms=int(os.environ.get("IDENTITY_RATE_LIMIT_TIME_WINDOW", "60000") or 60000),
    )
    runner = web.AppRunner(
        build_app(state), access_log=None, shutdown_timeout=2.0
    )  # a hung fault must not block exit
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    log.info(
        "identity double on http://127.0.0.1:%d (token ttl %.0fs, rate limit %s/%sms)",
        port,
        token_ttl,
        state.rate_max or "off",
        state.rate_window_ms,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True, help="the identity DB, with write access")
    parser.add_argument(
        "--service-key", default=os.environ.get("SUPABASE_SERVICE_ROLE_KEY", "dev-service-role-key")
    )
    parser.add_argument("--token-ttl", type=float, default=300.0, help="access token lifetime, seconds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args.port, args.database_url, args.service_key, args.token_ttl))


if __name__ == "__main__":
    main()
