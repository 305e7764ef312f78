"""Admin calls on behalf of a session: cleanups (with audit events), invitation marked sent, users, and the
bulk activate/suspend of users and organizations, idempotent per Idempotency-Key."""

from __future__ import annotations

import json

from aiohttp import web

from devstack.identity_double.auth import requires_session
from devstack.identity_double.state import STATE, Session, error


@requires_session
async def mark_invitation_sent(request: web.Request, session: Session) -> web.Response:
    row = await request.app[STATE].db.fetchrow(
        "UPDATE invitations SET status = 'sent', sent_at = coalesce(sent_at, now()) WHERE id = $1 RETURNING status",
        request.match_info["invitation_id"],
    )
    if row is None:
        return error(404, "invitation_not_found")
    return web.json_response({"id": request.match_info["invitation_id"], "status": row["status"]})


@requires_session
async def cleanup_sessions(request: web.Request, session: Session) -> web.Response:
    body = await request.json() if request.can_read_body else {}
    days = int(body.get("olderThanDays", 30))
    result = await request.app[STATE].db.execute(
        "DELETE FROM sessions WHERE expires_at < now() - make_interval(days => $1)", days
    )
    return web.json_response({"deleted": int(result.split()[-1]), "olderThanDays": days})


@requires_session
async def cleanup_impersonation(request: web.Request, session: Session) -> web.Response:
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


@requires_session
async def get_user(request: web.Request, session: Session) -> web.Response:
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


@requires_session
async def bulk_item(request: web.Request, session: Session) -> web.Response:
    """Activate or suspend one user or organization, idempotent per Idempotency-Key: the key is stored with
    the audit event of the change, and a replay answers the first result without changing anything."""
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
