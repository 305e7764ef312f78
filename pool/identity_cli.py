"""`ma-worker identity rotate-session SESSION_ID`: the runbook's `TokenService.rotateSession`, by hand.

The pool rotates its own session when identity answers `organization_scope_mismatch`; this is the same call
through the same client (`IdentityClient.rotate`), for when a job keeps failing with that code, or to revoke a
session's stale refresh tokens. A pool slot logs its session id (`identity session sess_… issued`); a slot
whose session was rotated under it gets a 401 on its next call and takes a new session by itself. The new tokens
identity answers with are never printed. The rotation goes to the audit journal when Redis is reachable.
"""

from __future__ import annotations

import os

import httpx
from pydantic import SecretStr

from handlers.clients.identity import IdentityClient, IdentityUnavailable, NotFound, TokenRefused
from handlers.errors import ThrottledError
from pool.cli_journal import journal
from pool.enqueue import CliError


async def rotate_session(session_id: str, *, base_url: str | None, redis_url: str | None) -> str:
    base_url = base_url or os.environ.get("IDENTITY_BASE_URL")
    if not base_url:
        raise CliError(
            "IDENTITY_BASE_URL is not set (identity HTTP API base); pass --identity-url or export it"
        )
    key = os.environ.get("SUPABASE_SERVICE_ROLE_KEY")
    if not key:
        raise CliError("SUPABASE_SERVICE_ROLE_KEY is not set (the service key identity's admin API takes)")
    async with httpx.AsyncClient(timeout=10) as http:
        client = IdentityClient(base_url, SecretStr(key), http)
        try:
            body = await client.rotate(session_id)
        except NotFound:
            raise CliError(
                f"session {session_id} not found at identity ({base_url}): nothing rotated. A pool slot logs "
                "its own as `identity session sess_… issued`"
            ) from None
        except TokenRefused as error:
            raise CliError(f"{error}: check SUPABASE_SERVICE_ROLE_KEY") from None
        except (IdentityUnavailable, ThrottledError) as error:
            raise CliError(f"{error}; nothing rotated, try again") from None
    outcome = (
        f"session {session_id} rotated at identity: its refresh token and access tokens are revoked, new ones "
        f"carry a fresh organization scope (expire in {float(body.get('expiresIn', 0)):.0f}s)"
    )
    await journal(redis_url, "rotate-session", "identity", [session_id], "rotated")
    return outcome
