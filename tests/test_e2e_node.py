"""End to end: a Node BullMQ producer adds one job to each handled queue; the pool under supervisord,
with the real queue table and handlers, processes them against the identity double and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from redis.asyncio import Redis

from tests.support.node import node_add
from tests.support.supervisord import host
from tests.support.waits import settle


@pytest.fixture(scope="module")
def real_stack(tmp_path_factory, db_urls, identity_double):
    yield from host(
        tmp_path_factory.mktemp("e2e-host"),
        db_urls,
        MA_QUEUE_TABLE="pool.queue_table:QUEUES",
        IDENTITY_BASE_URL=identity_double.url,
    )


async def test_one_node_job_per_queue_is_processed_end_to_end(real_stack, node_bullmq, identity_db, db_urls):
    _sup, valkey = real_stack
    org = f"org_{uuid.uuid4().hex[:8]}"
    await identity_db.execute("INSERT INTO organizations (id, name, slug) VALUES ($1, 'Node Co', $1)", org)
    task = f"task_{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    jobs = {
        "identity-events": ("organization.created", {"organizationId": org}),
        "user-management-jobs": ("session.cleanup", {"olderThanDays": 90}),
        "task-notifications": (
            "task.assigned",
            {
                "taskId": task,
                "organizationId": "org_acme",
                "tenantId": "org_acme_t1",
                "assigneeId": "user_acme_3",
                "assignedBy": "user_acme_1",
                "assignedAt": now,
            },
        ),
    }
    ids = {q: node_add(node_bullmq, valkey.url, q, [{"name": n, "data": d}])[0] for q, (n, d) in jobs.items()}
    redis = Redis.from_url(valkey.url, decode_responses=True)
    try:
        done = {q: await settle(redis, q, job_id, timeout=45) for q, job_id in ids.items()}
    finally:
        await redis.aclose()
    for queue, job in done.items():
        assert job.failedReason is None, (queue, job.failedReason)
    assert done["identity-events"].returnvalue["entitlementsSeeded"] == 3
    assert "deleted" in done["user-management-jobs"].returnvalue
    assert done["task-notifications"].returnvalue["notified"] is True
    tasks = await asyncpg.connect(db_urls.tasks)
    try:
        assert await tasks.fetchval("SELECT name FROM organizations WHERE id = $1", org) == "Node Co"
        assert await tasks.fetchval("SELECT count(*) FROM notifications WHERE task_id = $1", task) == 1
    finally:
        await tasks.close()
