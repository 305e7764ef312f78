"""Queue `identity-events`: organization and tenant lifecycle mirrored into the tasks database.

Every handler is an upsert or a delete keyed by the identity ids, so running a job twice is harmless.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from handlers import lookups
from handlers.context import Handler, IdempotencyKeys, JobContext
from handlers.errors import PermanentError
from handlers.payloads import Id, Payload

DELETE_BATCH = 1_000


class OrganizationEvent(Payload):
    organization_id: Id


class OrganizationCreated(Payload):
    organization_id: Id
    tenant_id: Id | None = None


class TenantEvent(Payload):
    organization_id: Id
    tenant_id: Id


async def _upsert_organization(
    conn: AsyncConnection, org: lookups.Organization, status: str | None = None
) -> None:
    await conn.execute(
        text(
            "INSERT INTO organizations (id, name, status) VALUES (:id, :name, :status)"
            " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, status = EXCLUDED.status, updated_at = now()"
        ),
        {"id": org.id, "name": org.name, "status": status or org.tasks_status},
    )


async def _upsert_tenant(conn: AsyncConnection, tenant: lookups.Tenant) -> None:
    await conn.execute(
        text(
            "INSERT INTO tenants (id, organization_id, name) VALUES (:id, :org, :name)"
            " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name"
        ),
        {"id": tenant.id, "org": tenant.organization_id, "name": tenant.name},
    )


async def organization_created(ctx: JobContext, payload: OrganizationCreated) -> dict[str, Any]:
    """Bootstrap the org in the tasks DB and seed the product's default entitlements (idempotent)."""
    org = await lookups.require_organization(ctx, payload.organization_id)
    tenant = await lookups.require_tenant_of(ctx, org.id, payload.tenant_id) if payload.tenant_id else None
    slug = ctx.settings.TASKS_PRODUCT_SLUG
    defaults = await lookups.default_entitlements(ctx, org.id, slug)
    async with ctx.tasks_db.begin() as conn:
        await _upsert_organization(conn, org)
        if tenant:
            await _upsert_tenant(conn, tenant)
        seeded = 0
        for item in defaults:
            result = await conn.execute(
                text(
                    "INSERT INTO entitlements (organization_id, product_slug, feature, quota)"
                    " VALUES (:org, :slug, :feature, :quota) ON CONFLICT DO NOTHING"
                ),
                {"org": org.id, "slug": slug, "feature": item["feature"], "quota": item["quota"]},
            )
            seeded += result.rowcount
    return {
        "organizationId": org.id,
        "tenantId": payload.tenant_id,
        "entitlementsSeeded": seeded,
        "entitlementsDefault": len(defaults),
    }


async def organization_updated(ctx: JobContext, payload: OrganizationEvent) -> dict[str, Any]:
    org = await lookups.require_organization(ctx, payload.organization_id)
    async with ctx.tasks_db.begin() as conn:
        await _upsert_organization(conn, org)
    return {"organizationId": org.id, "name": org.name, "status": org.tasks_status}


async def _set_status(ctx: JobContext, organization_id: str, status: str) -> dict[str, Any]:
    org = await lookups.require_organization(ctx, organization_id)
    async with ctx.tasks_db.begin() as conn:
        await _upsert_organization(conn, org, status)
    return {"organizationId": org.id, "status": status}


async def organization_suspended(ctx: JobContext, payload: OrganizationEvent) -> dict[str, Any]:
    """Suspended organizations get no notifications (task-notifications reads this status)."""
    return await _set_status(ctx, payload.organization_id, "suspended")


async def organization_reactivated(ctx: JobContext, payload: OrganizationEvent) -> dict[str, Any]:
    return await _set_status(ctx, payload.organization_id, "active")


async def _delete_in_batches(ctx: JobContext, table: str, where: str, params: dict[str, Any]) -> int:
    """Small transactions, so a large organization never holds long locks (and a retry resumes)."""
    total = 0
    while True:
        async with ctx.tasks_db.begin() as conn:
            result = await conn.execute(
                text(
                    f"DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM {table} WHERE {where} LIMIT {DELETE_BATCH})"
                ),
                params,
            )
        total += result.rowcount
        if result.rowcount < DELETE_BATCH:
            return total


async def organization_deleted(ctx: JobContext, payload: OrganizationEvent) -> dict[str, Any]:
    params = {"org": payload.organization_id}
    counts = {
        table: await _delete_in_batches(ctx, table, "organization_id = :org", params)
        for table in ("notifications", "tasks", "entitlements", "tenants")
    }
    counts["organizations"] = await _delete_in_batches(ctx, "organizations", "id = :org", params)
    return {"organizationId": payload.organization_id, "deleted": counts}


async def tenant_created(ctx: JobContext, payload: TenantEvent) -> dict[str, Any]:
    tenant = await lookups.require_tenant_of(ctx, payload.organization_id, payload.tenant_id)
    org = await lookups.require_organization(ctx, payload.organization_id)
    async with ctx.tasks_db.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO organizations (id, name, status) VALUES (:id, :name, :status) ON CONFLICT DO NOTHING"
            ),
            {"id": org.id, "name": org.name, "status": org.tasks_status},
        )
        await _upsert_tenant(conn, tenant)
    return {"organizationId": org.id, "tenantId": tenant.id}


async def tenant_deleted(ctx: JobContext, payload: TenantEvent) -> dict[str, Any]:
    async with ctx.tasks_db.connect() as conn:
        owner = (
            await conn.execute(
                text("SELECT organization_id FROM tenants WHERE id = :t"), {"t": payload.tenant_id}
            )
        ).scalar()
    known = await lookups.tenant(ctx, payload.tenant_id)  # may already be gone at identity
    if (owner and owner != payload.organization_id) or (
        known and known.organization_id != payload.organization_id
    ):
        raise PermanentError(
            f"tenant {payload.tenant_id} is not in organization {payload.organization_id}; refused"
        )
    params = {"t": payload.tenant_id}
    notifications = await _delete_in_batches(
        ctx, "notifications", "task_id IN (SELECT id FROM tasks WHERE tenant_id = :t)", params
    )
    tasks = await _delete_in_batches(ctx, "tasks", "tenant_id = :t", params)
    tenants = await _delete_in_batches(ctx, "tenants", "id = :t", params)
    return {
        "tenantId": payload.tenant_id,
        "deleted": {"notifications": notifications, "tasks": tasks, "tenants": tenants},
    }


HANDLERS: dict[str, Handler] = {
    "organization.created": organization_created,
    "organization.updated": organization_updated,
    "organization.suspended": organization_suspended,
    "organization.reactivated": organization_reactivated,
    "organization.deleted": organization_deleted,
    "tenant.created": tenant_created,
    "tenant.deleted": tenant_deleted,
}

IDEMPOTENCY_KEYS: IdempotencyKeys = {
    "organization.created": ("organizationId",),
    "organization.updated": ("organizationId",),
    "organization.suspended": ("organizationId",),
    "organization.reactivated": ("organizationId",),
    "organization.deleted": ("organizationId",),
    "tenant.created": ("organizationId", "tenantId"),
    "tenant.deleted": ("organizationId", "tenantId"),
}
