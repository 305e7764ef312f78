"""Supabase auth admin API with the service role key (`apikey` + `Authorization: Bearer`)."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import SecretStr

from handlers.clients.identity import IdentityUnavailable, NotFound, retry_after
from handlers.errors import PermanentError, ThrottledError


class SupabaseAdmin:
    def __init__(self, base_url: str, service_role_key: SecretStr, http: httpx.AsyncClient) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = service_role_key
        self._http = http

    def _headers(self) -> dict[str, str]:
        key = self._key.get_secret_value()
        return {"apikey": key, "Authorization": f"Bearer {key}"}

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(
                method, self.base_url + path, headers=self._headers(), **kwargs
            )
        except httpx.TimeoutException as error:
            raise IdentityUnavailable(f"supabase {method} {path} timed out") from error
        except httpx.TransportError as error:
            raise IdentityUnavailable(
                f"supabase {method} {path} unreachable: {type(error).__name__}"
            ) from error
        if response.status_code == 429:
            raise ThrottledError(f"supabase answered 429 to {method} {path}", retry_after(response))
        if response.status_code >= 500:
            raise IdentityUnavailable(f"supabase answered {response.status_code} to {method} {path}")
        if response.status_code == 401:
            raise IdentityUnavailable("supabase refused the service role key (401)")  # config; retry, alert
        return response

    async def invite(
        self, email: str, *, data: dict[str, Any], redirect_to: str | None = None
    ) -> dict[str, Any]:
        """Invite a user; an address already registered counts as done (idempotent per invitation)."""
        body: dict[str, Any] = {"email": email, "data": data}
        if redirect_to:
            body["redirect_to"] = redirect_to
        response = await self._request("POST", "/auth/v1/invite", json=body)
        if response.status_code == 422 and "already" in response.text.lower():
            return {"email": email, "alreadyRegistered": True}
        if response.status_code >= 400:
            raise PermanentError(f"supabase refused the invite: {response.status_code} {response.text[:200]}")
        return {**response.json(), "alreadyRegistered": False}

    async def get_user(self, user_id: str) -> dict[str, Any]:
        response = await self._request("GET", f"/auth/v1/admin/users/{user_id}")
        if response.status_code == 404:
            raise NotFound(f"supabase user {user_id}")
        if response.status_code >= 400:
            raise PermanentError(f"supabase refused get user: {response.status_code}")
        body: dict[str, Any] = response.json()
        return body
