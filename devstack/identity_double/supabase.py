"""The Supabase auth admin API the invitation flow calls: invite a user, read one back. Supabase wants the
service key twice (apikey header and bearer) and answers in its own error shape."""

from __future__ import annotations

import functools
import json
import secrets

import asyncpg
from aiohttp import web

from devstack.identity_double.auth import Handler, service_key_ok
from devstack.identity_double.state import STATE


def _requires_api_key(handler: Handler) -> Handler:
    """Both the apikey header and the bearer must be the service key, as Supabase's admin API wants."""

    @functools.wraps(handler)
    async def checked(request: web.Request) -> web.Response:
        apikey_ok = secrets.compare_digest(request.headers.get("apikey", ""), request.app[STATE].service_key)
        if not (apikey_ok and service_key_ok(request)):
            return web.json_response({"msg": "Invalid API key"}, status=401)
        return await handler(request)

    return checked


def _user_json(row: asyncpg.Record) -> dict[str, str]:
    return {"id": str(row["id"]), "email": row["email"], "invited_at": row["invited_at"].isoformat()}


@_requires_api_key
async def invite(request: web.Request) -> web.Response:
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
    return web.json_response(_user_json(row))


@_requires_api_key
async def get_user(request: web.Request) -> web.Response:
    try:
        row = await request.app[STATE].db.fetchrow(
            "SELECT id, email, invited_at FROM auth_users WHERE id = $1::uuid", request.match_info["user_id"]
        )
    except asyncpg.DataError:
        row = None
    if row is None:
        return web.json_response({"code": 404, "msg": "User not found"}, status=404)
    return web.json_response(_user_json(row))
