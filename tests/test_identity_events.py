"""identity-events: the tasks database mirrors organization and tenant lifecycle, idempotently."""

from __future__ import annotations

import uuid

import pytest

from tests.support.waits import run_job

Q = "identity-events"


@pytest.fixture
async def org(identity_db):
    """A fresh organization with two tenants at identity (the identity service's writes)."""
    org_id = f"org_{uuid.uuid4().hex[:8]}"
    await identity_db.execute(
        "INSERT INTO organizations (id, name, slug) VALUES ($1, $2, $1)", org_id, "Fresh Co"
    )
    await identity_db.executemany(
        "INSERT INTO tenants (id, organization_id, name) VALUES ($1, $2, $3)",
        [(f"{org_id}_a", org_id, "A"), (f"{org_id}_b", org_id, "B")],
    )
    return org_id


@pytest.fixture
async def tasks(db_urls):
    import asyncpg

    conn = await asyncpg.connect(db_urls.tasks)
    yield conn
    await conn.close()


async def snapshot(tasks, org_id: str) -> dict:
    return {
        "org": [
            dict(r)
            for r in await tasks.fetch("SELECT id, name, status FROM organizations WHERE id = $1", org_id)
        ],
        "tenants": sorted(
            r["id"] for r in await tasks.fetch("SELECT id FROM tenants WHERE organization_id = $1", org_id)
        ),
        "entitlements": sorted(
            (r["feature"], r["quota"])
            for r in await tasks.fetch(
                "SELECT feature, quota FROM entitlements WHERE organization_id = $1 AND product_slug = 'tasks'",
                org_id,
            )
        ),
    }


async def twice(redis, name: str, data: dict) -> list:
    """Run the same job twice (as a redelivery would): both complete."""
    jobs = [await run_job(redis, Q, name, data) for _ in range(2)]
    for job in jobs:
        assert job.failedReason is None, job.failedReason
    return jobs


async def test_organization_created_bootstraps_the_org_and_seeds_entitlements_once(
    redis, start_real_pool, org, tasks
):
    start_real_pool(Q)
    first, second = await twice(
        redis, "organization.created", {"organizationId": org, "tenantId": f"{org}_a"}
    )
    assert first.returnvalue["entitlementsSeeded"] == 3 and second.returnvalue["entitlementsSeeded"] == 0
    assert await snapshot(tasks, org) == {
        "org": [{"id": org, "name": "Fresh Co", "status": "active"}],
        "tenants": [f"{org}_a"],
        "entitlements": [("tasks.automations", 20), ("tasks.guests", None), ("tasks.max", 1000)],
    }


async def test_organization_updated_syncs_name_and_status(redis, start_real_pool, org, tasks, identity_db):
    start_real_pool(Q)
    await twice(redis, "organization.created", {"organizationId": org})
    await identity_db.execute("UPDATE organizations SET name = 'Renamed Co' WHERE id = $1", org)
    await twice(redis, "organization.updated", {"organizationId": org})
    assert (await snapshot(tasks, org))["org"] == [{"id": org, "name": "Renamed Co", "status": "active"}]


async def test_suspend_and_reactivate_flip_the_status(redis, start_real_pool, org, tasks):
    start_real_pool(Q)
    await twice(redis, "organization.suspended", {"organizationId": org})
    assert (await snapshot(tasks, org))["org"][0]["status"] == "suspended"
    await twice(redis, "organization.reactivated", {"organizationId": org})
    assert (await snapshot(tasks, org))["org"][0]["status"] == "active"


async def test_organization_deleted_removes_its_tasks_data_in_batches(redis, start_real_pool, org, tasks):
    start_real_pool(Q)
    await twice(redis, "organization.created", {"organizationId": org, "tenantId": f"{org}_a"})
    await tasks.executemany(
        "INSERT INTO tasks (id, organization_id, tenant_id, title) VALUES ($1, $2, $3, 't')",
        [(f"{org}_task{i}", org, f"{org}_a") for i in range(2500)],
    )
    await tasks.execute(
        "INSERT INTO notifications (dedupe_key, kind, organization_id, task_id, recipient_id)"
        " VALUES ($1, 'x', $2, $3, 'u')",
        f"k-{org}",
        org,
        f"{org}_task1",
    )
    first, second = await twice(redis, "organization.deleted", {"organizationId": org})
    assert first.returnvalue["deleted"] == {
        "notifications": 1,
        "tasks": 2500,
        "entitlements": 3,
        "tenants": 1,
        "organizations": 1,
    }
    assert set(second.returnvalue["deleted"].values()) == {0}
    assert await snapshot(tasks, org) == {"org": [], "tenants": [], "entitlements": []}
    assert await tasks.fetchval("SELECT count(*) FROM tasks WHERE organization_id = $1", org) == 0


async def test_tenant_created_and_deleted(redis, start_real_pool, org, tasks):
    start_real_pool(Q)
    await twice(redis, "tenant.created", {"organizationId": org, "tenantId": f"{org}_b"})
    assert (await snapshot(tasks, org))["tenants"] == [f"{org}_b"]
    await tasks.execute(
        "INSERT INTO tasks (id, organization_id, tenant_id, title) VALUES ($1, $2, $3, 't')",
        f"{org}_tb",
        org,
        f"{org}_b",
    )
    first, _ = await twice(redis, "tenant.deleted", {"organizationId": org, "tenantId": f"{org}_b"})
    assert first.returnvalue["deleted"]["tasks"] == 1
    assert (await snapshot(tasks, org))["tenants"] == []


async def test_a_tenant_of_another_organization_is_refused_and_nothing_is_touched(
    redis, start_real_pool, org, tasks
):
    start_real_pool(Q)
    for name in ("tenant.created", "organization.created"):
        job = await run_job(redis, Q, name, {"organizationId": org, "tenantId": "org_acme_t1"})
        assert job.failedReason == f"tenant org_acme_t1 is not in organization {org}; refused"
        assert job.attemptsMade == 1
    assert await snapshot(tasks, org) == {"org": [], "tenants": [], "entitlements": []}
    assert await tasks.fetchval("SELECT organization_id FROM tenants WHERE id = 'org_acme_t1'") == "org_acme"


async def test_an_unknown_organization_fails_permanently_naming_it(redis, start_real_pool):
    start_real_pool(Q)
    job = await run_job(redis, Q, "organization.updated", {"organizationId": "org_nope"})
    assert job.failedReason == "organization org_nope does not exist at identity" and job.attemptsMade == 1


async def test_identity_db_unreachable_falls_back_to_identity_http(redis, start_real_pool, org, tasks):
    pool = start_real_pool(Q, DATABASE_URL="postgresql://ma_worker_ro@127.0.0.1:9/identity")
    job = await run_job(redis, Q, "organization.created", {"organizationId": org, "tenantId": f"{org}_a"})
    assert job.failedReason is None
    assert job.returnvalue["entitlementsSeeded"] == 3
    assert (await snapshot(tasks, org))["tenants"] == [f"{org}_a"]
    assert "falling back to identity HTTP" in pool.text()


async def test_worker_code_cannot_write_to_the_identity_db(db_urls):
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from pool.runtime import make_engine

    engine = make_engine(db_urls.identity_ro, read_only=True)
    try:
        async with engine.begin() as conn:
            with pytest.raises(DBAPIError, match="read-only transaction"):
                await conn.execute(text("UPDATE organizations SET name = 'hacked' WHERE id = 'org_acme'"))
    finally:
        await engine.dispose()
