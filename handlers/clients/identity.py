"""The identity service client: the worker's own token, scope rotation, and failures mapped to our kinds.

- 401/403 on a call: refresh the token once and retry; still refused -> transient (TokenRefused).
- 403 organization_scope_mismatch: rotate the session (TokenService.rotateSession) and retry once.
- 429 -> ThrottledError with Retry-After; 5xx, timeouts, connection errors -> IdentityUnavailable (transient).
- 404 -> NotFound (the handler decides); other 4xx -> PermanentError naming the endpoint and the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from handlers.errors import PermanentError, ThrottledError

SCOPE_MISMATCH = "organization_scope_mismatch"
log = logging.getLogger("handlers.identity")


class IdentityUnavailable(Exception):
    """Identity did not answer usefully (5xx, timeout, connection): retried with backoff."""


class TokenRefused(Exception):
    """Identity refused the worker's token even after a refresh (or a rotation): retried with backoff."""


class NotFound(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found at identity")
        self.what = what


@dataclass
class _Token:
    access: str
    refresh: str
    session_id: str
    expires_at: float


def retry_after(response: httpx.Response, default: float = 5.0) -> float:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return default


def _error_code(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("error") or body.get("error_code") or "") if isinstance(body, dict) else ""


class IdentityClient:
    def __init__(self, base_url: str, service_key: SecretStr, http: httpx.AsyncClient) -> None:
        self.base_url = base_url.rstrip("/")
        self._service_key = service_key
        self._http = http
        self._token: _Token | None = None
        self._lock = asyncio.Lock()
        self.refreshes = 0
        self.rotations = 0

    # -- the worker's token ----------------------------------------------------------------------
    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, self.base_url + path, **kwargs)
        except httpx.TimeoutException as error:
            raise IdentityUnavailable(f"identity {method} {path} timed out") from error
        except httpx.TransportError as error:
            raise IdentityUnavailable(
                f"identity {method} {path} unreachable: {type(error).__name__}"
            ) from error

    def _check_auth_answer(self, response: httpx.Response, what: str) -> dict[str, Any]:
        if response.status_code == 429:
            raise ThrottledError(f"identity answered 429 to {what}", retry_after(response))
        if response.status_code >= 500:
            raise IdentityUnavailable(f"identity answered {response.status_code} to {what}")
        if response.status_code != 200:
            raise TokenRefused(f"identity refused {what} ({response.status_code} {_error_code(response)})")
        body: dict[str, Any] = response.json()
        return body

    def _store(self, body: dict[str, Any]) -> str:
        ttl = float(body.get("expiresIn", 300))
        self._token = _Token(
            body["accessToken"], body["refreshToken"], body["sessionId"], time.monotonic() + ttl * 0.9
        )
        return self._token.access

    def _service_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._service_key.get_secret_value()}"}

    async def token(self, *, stale: str | None = None) -> str:
        """The current access token; refreshed when near expiry, or when the caller saw `stale` refused."""
        async with self._lock:
            current = self._token
            if current and current.access != stale and time.monotonic() < current.expires_at:
                return current.access
            if current is not None:
                response = await self._send(
                    "POST", "/v1/auth/refresh", json={"refreshToken": current.refresh}
                )
                if response.status_code == 200:
                    self.refreshes += 1
                    return self._store(response.json())
                if response.status_code == 429 or response.status_code >= 500:
                    self._check_auth_answer(response, "the token refresh")
            return await self._issue_new()

    async def rotate_session(self, *, stale: str) -> str:
        """TokenService.rotateSession: revoke stale refresh tokens and reissue with fresh claims."""
        async with self._lock:
            current = self._token
            if current is None or current.access != stale:  # someone rotated or refreshed meanwhile
                return current.access if current else await self._issue_new()
            response = await self._post_rotation(current.session_id)
            self.rotations += 1
            token = self._store(self._check_auth_answer(response, "the session rotation"))
            log.info("identity session %s rotated (%s)", current.session_id, SCOPE_MISMATCH)
            return token

    async def rotate(self, session_id: str) -> dict[str, Any]:
        """TokenService.rotateSession on any session, for an operator (`ma-worker identity rotate-session`): the
        same call the automatic path makes. Identity revokes the session's refresh token and access tokens and
        answers with fresh ones (the caller must not show them). An unknown session raises NotFound."""
        response = await self._post_rotation(session_id)
        if response.status_code == 404:
            raise NotFound(f"session {session_id}")
        return self._check_auth_answer(response, f"the rotation of session {session_id}")

    async def _post_rotation(self, session_id: str) -> httpx.Response:
        return await self._send(
            "POST", f"/v1/admin/sessions/{session_id}/rotate", headers=self._service_auth()
        )

    async def _issue_new(self) -> str:
        """A new session from the service key (the caller holds the lock)."""
        response = await self._send("POST", "/v1/auth/token", headers=self._service_auth())
        token = self._store(self._check_auth_answer(response, "the worker's service key"))
        if self._token is not None:  # the id an operator passes to `ma-worker identity rotate-session`
            log.info("identity session %s issued", self._token.session_id)
        return token

    # -- calls --------------------------------------------------------------------------------------
    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        what: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        what = what or f"{method} {path}"
        token = await self.token()
        refreshed = rotated = False
        while True:
            response = await self._send(
                method, path, json=json, headers={**(headers or {}), "Authorization": f"Bearer {token}"}
            )
            status, code = response.status_code, ""
            if status in (401, 403):
                code = _error_code(response)
                if code == SCOPE_MISMATCH and not rotated:
                    rotated = True
                    token = await self.rotate_session(stale=token)
                    continue
                if code not in (SCOPE_MISMATCH, "tenant_not_in_organization") and not refreshed:
                    refreshed = True
                    token = await self.token(stale=token)
                    continue
                if code == SCOPE_MISMATCH:
                    raise TokenRefused(f"{code} on {what} persists after a session rotation")
                if code == "tenant_not_in_organization":
                    raise PermanentError(f"identity refused {what}: {response.json().get('message', code)}")
                raise TokenRefused(
                    f"identity refused the worker's token on {what} ({status} {code}) after a refresh"
                )
            if status == 429:
                raise ThrottledError(f"identity answered 429 to {what}", retry_after(response))
            if status >= 500:
                raise IdentityUnavailable(f"identity answered {status} to {what}")
            if status == 404:
                raise NotFound(what)
            if status >= 400:
                raise PermanentError(
                    f"identity rejected {what}: {status} {_error_code(response) or response.text[:200]}"
                )
            body: dict[str, Any] = response.json()
            return body

    async def fetch_tasks_context(
        self, token: str | None = None, *, context: dict[str, str | None], product_slug: str = "tasks"
    ) -> dict[str, Any]:
        """fetchTasksContext(token, {context: {organizationId, tenantId}}): the context always travels."""
        if not context.get("organizationId"):
            raise ValueError("fetch_tasks_context needs context.organizationId")
        body = {
            "context": {"organizationId": context["organizationId"], "tenantId": context.get("tenantId")},
            "productSlug": product_slug,
        }
        return await self.call("POST", "/v1/tasks/context", json=body, what="fetchTasksContext")

    async def organization(self, organization_id: str) -> dict[str, Any]:
        return await self.call(
            "GET", f"/v1/organizations/{organization_id}", what=f"organization {organization_id}"
        )

    async def tenant(self, tenant_id: str) -> dict[str, Any]:
        return await self.call("GET", f"/v1/tenants/{tenant_id}", what=f"tenant {tenant_id}")
