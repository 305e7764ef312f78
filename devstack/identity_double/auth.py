"""Who is calling: the service key, access tokens and the sessions behind them, and the token endpoints.

A token's organization scope is the snapshot taken when its session was issued or rotated: an organization
created later answers 403 `organization_scope_mismatch` until the session is rotated.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from devstack.identity_double.state import STATE, Session, State, error

Handler = Callable[[web.Request], Awaitable[web.Response]]
SessionHandler = Callable[[web.Request, Session], Awaitable[web.Response]]


def bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    return header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""


def service_key_ok(request: web.Request) -> bool:
    return secrets.compare_digest(bearer(request), request.app[STATE].service_key)


def requires_service_key(handler: Handler) -> Handler:
    """For the calls a backend makes as itself (issuing tokens, rotating sessions): bearer = the service key."""

    @functools.wraps(handler)
    async def checked(request: web.Request) -> web.Response:
        if not service_key_ok(request):
            return error(401, "invalid_service_key")
        return await handler(request)

    return checked


def requires_session(handler: SessionHandler) -> Handler:
    """For every call made on behalf of a session: the bearer must be a live access token (401 `invalid_token`
    or `token_expired` otherwise, before the handler reads anything); the handler gets the token's session."""

    @functools.wraps(handler)
    async def checked(request: web.Request) -> web.Response:
        state = request.app[STATE]
        entry = state.access.get(bearer(request))
        if entry is None:
            return error(401, "invalid_token")
        session_id, expires = entry
        if time.time() >= expires:
            return error(401, "token_expired")
        return await handler(request, state.sessions[session_id])

    return checked


def scope_mismatch(session: Session, org_id: str) -> web.Response | None:
    """The 403 a call about an organization outside the session's scope snapshot answers, or None."""
    if org_id in session.orgs:
        return None
    return error(403, "organization_scope_mismatch", f"token is not scoped to organization {org_id}")


# -- the token endpoints ----------------------------------------------------------------------------------
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


@requires_service_key
async def issue_token(request: web.Request) -> web.Response:
    state = request.app[STATE]
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


@requires_service_key
async def rotate_session(request: web.Request) -> web.Response:
    """TokenService.rotateSession: a new refresh token and a fresh organization scope; the session's access
    tokens are revoked."""
    state = request.app[STATE]
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
