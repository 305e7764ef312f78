"""`ma-worker identity rotate-session`: the runbook's TokenService.rotateSession as an operator command, against
the identity double, through the same client the pool uses."""

from __future__ import annotations

import os
import subprocess

import httpx

from pool.contracts import AUDIT_STREAM
from tests.support.paths import BIN
from tests.support.processes import SERVICE_KEY


def rotate(session_id: str, identity_url: str, redis_url: str, tmp_path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MA_")}
    env.update(IDENTITY_BASE_URL=identity_url, SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY, REDIS_URL=redis_url)
    return subprocess.run(
        [str(BIN / "ma-worker"), "identity", "rotate-session", session_id],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def test_rotate_session_revokes_the_sessions_tokens_says_so_and_shows_no_token(
    identity, redis, valkey, tmp_path
):
    async with httpx.AsyncClient(base_url=identity.url, timeout=5) as client:
        issued = (
            await client.post("/v1/auth/token", headers={"Authorization": f"Bearer {SERVICE_KEY}"})
        ).json()
        old = {"Authorization": f"Bearer {issued['accessToken']}"}
        assert (await client.get("/v1/organizations/org_acme", headers=old)).status_code == 200

        result = rotate(issued["sessionId"], identity.url, valkey.url, tmp_path)

        assert result.returncode == 0, result.stderr
        assert f"session {issued['sessionId']} rotated at identity" in result.stdout
        assert "at_" not in result.stdout + result.stderr and "rt_" not in result.stdout + result.stderr
        assert SERVICE_KEY not in result.stdout + result.stderr
        assert identity.stats().get("sessions rotated") == 1
        again = await client.get("/v1/organizations/org_acme", headers=old)
        assert again.json()["error"] == "invalid_token", "the session's access tokens are revoked"
        refreshed = await client.post("/v1/auth/refresh", json={"refreshToken": issued["refreshToken"]})
        assert refreshed.status_code == 401, "the stale refresh token is revoked"

    (entry,) = [f for _, f in await redis.xrange(AUDIT_STREAM) if f["action"] == "rotate-session"]
    assert entry["target"] == "identity" and issued["sessionId"] in entry["ids"]
    assert (tmp_path / "var" / "ma-top-audit.log").read_text().count("rotate-session") == 1


async def test_rotate_session_of_an_unknown_session_fails_clearly_and_rotates_nothing(
    identity, valkey, tmp_path
):
    result = rotate("sess_nope", identity.url, valkey.url, tmp_path)

    assert result.returncode == 2
    assert result.stderr.startswith("ma-worker: session sess_nope not found at identity")
    assert "nothing rotated" in result.stderr
    assert identity.stats().get("sessions rotated") is None
