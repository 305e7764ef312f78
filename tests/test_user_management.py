"""user-management-jobs: invitations via Supabase, session cleanup, the 24-hourly impersonation cleanup."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.support.waits import run_job, wait_for

Q = "user-management-jobs"


@pytest.fixture
async def invitation(identity_db):
    inv_id = f"inv_{uuid.uuid4().hex[:8]}"
    email = f"{inv_id}@new.example"
    await identity_db.execute(
        "INSERT INTO invitations (id, organization_id, tenant_id, email, role, invited_by)"
        " VALUES ($1, 'org_acme', 'org_acme_t1', $2, 'member', 'user_acme_1')",
        inv_id,
        email,
    )
    return {
        "invitationId": inv_id,
        "organizationId": "org_acme",
        "tenantId": "org_acme_t1",
        "email": email,
        "role": "member",
        "invitedBy": "user_acme_1",
        "redirectTo": "https://app.example/welcome",
    }


async def test_invitation_send_invites_once_and_marks_it_sent(
    redis, start_real_pool, invitation, identity_db
):
    start_real_pool(Q)
    first = await run_job(redis, Q, "invitation.send", invitation)
    second = await run_job(redis, Q, "invitation.send", invitation)
    assert first.returnvalue == {
        "invitationId": invitation["invitationId"],
        "alreadySent": False,
        "alreadyRegistered": False,
    }
    assert second.returnvalue == {"invitationId": invitation["invitationId"], "alreadySent": True}
    users = await identity_db.fetch("SELECT metadata FROM auth_users WHERE email = $1", invitation["email"])
    assert len(users) == 1
    assert '"role": "member"' in users[0]["metadata"]
    assert (
        await identity_db.fetchval("SELECT status FROM invitations WHERE id = $1", invitation["invitationId"])
        == "sent"
    )


async def test_an_invite_that_reached_supabase_before_a_crash_is_not_sent_twice(
    redis, start_real_pool, invitation, identity_db
):
    await identity_db.execute(
        "INSERT INTO auth_users (email) VALUES ($1)", invitation["email"]
    )  # the earlier try
    start_real_pool(Q)
    job = await run_job(redis, Q, "invitation.send", invitation)
    assert job.returnvalue["alreadyRegistered"] is True
    assert (
        await identity_db.fetchval(
            "SELECT invite_count FROM auth_users WHERE email = $1", invitation["email"]
        )
        == 1
    )
    assert (
        await identity_db.fetchval("SELECT status FROM invitations WHERE id = $1", invitation["invitationId"])
        == "sent"
    )


async def test_invitation_with_a_foreign_tenant_or_bad_email_is_refused(
    redis, start_real_pool, invitation, identity_db
):
    start_real_pool(Q)
    job = await run_job(redis, Q, "invitation.send", {**invitation, "tenantId": "org_globex_t1"})
    assert job.failedReason == "tenant org_globex_t1 is not in organization org_acme; refused"
    job = await run_job(redis, Q, "invitation.send", {**invitation, "email": "not-an-email"})
    assert job.failedReason.startswith("invalid payload for invitation.send: email:")
    assert (
        await identity_db.fetchval("SELECT count(*) FROM auth_users WHERE email = $1", invitation["email"])
        == 0
    )


async def test_session_cleanup_purges_sessions_expired_longer_than_asked(redis, start_real_pool, identity_db):
    tag = uuid.uuid4().hex[:6]
    await identity_db.executemany(
        "INSERT INTO sessions (id, user_id, expires_at) VALUES ($1, 'user_acme_1',"
        " now() - make_interval(days => $2))",
        [(f"s_{tag}_old", 45), (f"s_{tag}_recent", 3)],
    )
    start_real_pool(Q)
    first = await run_job(redis, Q, "session.cleanup", {"olderThanDays": 40})
    second = await run_job(redis, Q, "session.cleanup", {"olderThanDays": 40})
    assert first.returnvalue == {"deleted": 1, "olderThanDays": 40}
    assert second.returnvalue == {"deleted": 0, "olderThanDays": 40}
    left = {r["id"] for r in await identity_db.fetch("SELECT id FROM sessions WHERE id LIKE $1", f"s_{tag}%")}
    assert left == {f"s_{tag}_recent"}


async def test_impersonation_cleanup_retires_expired_tokens_audits_them_and_logs_the_runbook_line(
    redis, start_real_pool, identity_db
):
    tag = uuid.uuid4().hex[:6]
    # The pool first, idle: the queue's daily `impersonation-cleanup` scheduler left a run in the queue (its first,
    # from whichever test's pool upserted it first) that must not retire these tokens before the job below does.
    pool = start_real_pool(Q)
    await wait_for(lambda: f"consuming {Q}" in pool.text(), what="the pool up")
    await wait_for(lambda: _idle(redis, Q), what="the scheduler's pending run done")
    await identity_db.executemany(
        "INSERT INTO impersonation_tokens (id, actor_id, user_id, expires_at) VALUES ($1, 'user_root', 'user_acme_2',"
        " now() + make_interval(hours => $2))",
        [(f"imp_{tag}_1", -5), (f"imp_{tag}_2", -1), (f"imp_{tag}_3", 3)],
    )
    expected = await identity_db.fetchval(
        "SELECT count(*) FROM impersonation_tokens WHERE expires_at < now() AND retired_at IS NULL"
    )
    audits_before = await identity_db.fetchval("SELECT count(*) FROM audit_events")
    job = await run_job(redis, Q, "impersonation.cleanup", {})
    assert job.returnvalue == {"retired": expected}
    assert await identity_db.fetchval("SELECT count(*) FROM audit_events") == audits_before + expected
    assert await identity_db.fetchval(
        "SELECT retired_at IS NULL FROM impersonation_tokens WHERE id = $1", f"imp_{tag}_3"
    )
    await wait_for(
        lambda: f"Expired impersonation sessions cleaned: {expected}" in pool.text(), what="runbook line"
    )
    again = await run_job(redis, Q, "impersonation.cleanup", {})
    assert again.returnvalue == {"retired": 0}

    async def reported() -> bool:
        return any(
            f.get("kind") == "scheduled-task"
            and f["message"] == f"Expired impersonation sessions cleaned: {expected}"
            for _, f in await redis.xrange("ma:events")
        )

    await wait_for(reported, what="scheduled-task result on ma:events")


async def _idle(redis: Any, queue: str) -> bool:
    """Nothing waiting, active or due in `queue` (a scheduler's next run a day away is not due)."""
    due = await redis.zcount(f"bull:{queue}:delayed", 0, int(time.time() * 1000) << 12)
    return not (await redis.llen(f"bull:{queue}:wait") or await redis.llen(f"bull:{queue}:active") or due)
