"""The identity double's test hooks: other tests lean on them, so they must hold under concurrent requests."""

from __future__ import annotations

import asyncio

import httpx

from tests.support.processes import SERVICE_KEY
from tests.support.waits import wait_for


async def test_latency_removed_while_requests_sleep_in_it_lets_them_answer_normally(identity):
    identity.hook("POST", "/__latency", {"path": "/v1/users", "seconds": 2})
    async with httpx.AsyncClient(base_url=identity.url, timeout=10) as client:
        held = asyncio.create_task(client.get("/v1/users/u_nobody"))
        await wait_for(
            lambda: identity.stats().get("GET /v1/users/{user_id}"),
            what="the request to be held by the latency",
        )

        assert identity.hook("POST", "/__latency", {"path": "/v1/users", "seconds": 0}) == {}
        response = await held

    # Answered by its handler (no token here), not a 500 from the latency loop.
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_token"


async def test_latencies_changed_while_twenty_requests_sleep_in_them_all_answer_2xx(identity):
    """Before the fix the sleeping requests iterated the latency table across their sleep: a hook call that
    removed or added an entry meanwhile made each of them answer 500."""
    identity.hook("POST", "/__latency", {"path": "/v1/auth", "seconds": 1.5})
    identity.hook("POST", "/__latency", {"path": "/v1/", "seconds": 0.5})
    auth = {"Authorization": f"Bearer {SERVICE_KEY}"}
    async with httpx.AsyncClient(base_url=identity.url, timeout=10) as client:
        held = [asyncio.create_task(client.post("/v1/auth/token", headers=auth)) for _ in range(20)]
        await wait_for(
            lambda: identity.stats().get("POST /v1/auth/token", 0) >= 20,
            what="twenty requests held by the latencies",
        )

        identity.hook("POST", "/__latency", {"path": "/v1/auth", "seconds": 0})
        identity.hook("POST", "/__latency", {"path": "/v1/tasks", "seconds": 0.1})
        assert identity.hook("POST", "/__latency", {"path": "/v1/", "seconds": 0}) == {"/v1/tasks": 0.1}
        responses = await asyncio.gather(*held)

    assert [r.status_code for r in responses] == [200] * 20, [r.text for r in responses if r.is_error]
    assert all(r.json()["accessToken"] for r in responses)
    assert identity.stats().get("500", 0) == 0


async def test_each_credential_is_checked_before_the_handler_and_refused_in_its_own_shape(identity):
    async with httpx.AsyncClient(base_url=identity.url, timeout=10) as client:
        no_token = await client.post("/v1/tasks/context", json={})
        wrong_key = await client.post("/v1/auth/token", headers={"Authorization": "Bearer not-the-key"})
        supabase = await client.get(
            "/auth/v1/admin/users/u_nobody", headers={"apikey": "not-the-key", "Authorization": "Bearer x"}
        )
        token = (
            await client.post("/v1/auth/token", headers={"Authorization": f"Bearer {SERVICE_KEY}"})
        ).json()
        with_token = await client.get(
            "/v1/users/u_nobody", headers={"Authorization": f"Bearer {token['accessToken']}"}
        )

    assert (no_token.status_code, no_token.json()["error"]) == (401, "invalid_token")
    assert (wrong_key.status_code, wrong_key.json()["error"]) == (401, "invalid_service_key")
    assert (supabase.status_code, supabase.json()) == (401, {"msg": "Invalid API key"})
    assert (with_token.status_code, with_token.json()["error"]) == (404, "user_not_found")
