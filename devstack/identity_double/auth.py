"""Who is calling: the service key, access tokens and the sessions behind them, and the token endpoints.

A token's organization scope is the snapshot taken when its session was issued or rotated: an organization
created later answers 403 `organization_scope_mismatch` until the session is rotated.
"""

from __future__ import annotations

import secrets
import time

from aiohttp import web

from devstack.identity_double.state import STATE, Session, State, error


def bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    return header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""


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


def service_key_ok(request: web.Request) -> bool:
    state = request.app[STATE]
    return secrets.compare_digest(bearer(request), state.service_key)


async def issue_token(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not service_key_ok(request):
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
    if not service_key_ok(request):
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


def session_of(request: web.Request) -> Session | web.Response:
    state = request.app[STATE]
    token = bearer(request)
    entry = state.access.get(token)
    if entry is None:
        return error(401, "invalid_token")
    sid, expires = entry
    if time.time() >= expires:
        return error(401, "token_expired")
    return state.sessions[sid]


def scoped(request: web.Request, org_id: str) -> Session | web.Response:
    session = session_of(request)
    if isinstance(session, Session) and org_id not in session.orgs:
        return error(403, "organization_scope_mismatch", f"token is not scoped to organization {org_id}")
    return session
