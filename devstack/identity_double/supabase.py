"""The Supabase auth admin API the invitation flow calls: invite a user, read one back. Supabase wants the
service key twice (apikey header and bearer) and answers in its own error shape."""

from __future__ import annotations

import json
import secrets

import asyncpg
from aiohttp import web

from devstack.identity_double.auth import service_key_ok
from devstack.identity_double.state import STATE


def _supabase_ok(request: web.Request) -> bool:
    state = request.app[STATE]
    return secrets.compare_digest(request.headers.get("apikey", ""), state.service_key) and service_key_ok(
        request
    )


async def invite(request: web.Request) -> web.Response:
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


async def get_user(request: web.Request) -> web.Response:
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
