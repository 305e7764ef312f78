"""Lookups on behalf of a session: organizations, tenants, invitations, and the tasks context."""

from __future__ import annotations

from aiohttp import web

from devstack.identity_double.auth import requires_session, scope_mismatch
from devstack.identity_double.state import STATE, Session, error


@requires_session
async def get_organization(request: web.Request, session: Session) -> web.Response:
    org_id = request.match_info["org_id"]
    if refused := scope_mismatch(session, org_id):
        return refused
    row = await request.app[STATE].db.fetchrow(
        "SELECT id, name, slug, status FROM organizations WHERE id = $1", org_id
    )
    if row is None:
        return error(404, "organization_not_found")
    return web.json_response(dict(row))


@requires_session
async def get_tenant(request: web.Request, session: Session) -> web.Response:
    row = await request.app[STATE].db.fetchrow(
        "SELECT id, organization_id, name, status FROM tenants WHERE id = $1", request.match_info["tenant_id"]
    )
    if row is None:
        return error(404, "tenant_not_found")
    return web.json_response(
        {
            "id": row["id"],
            "organizationId": row["organization_id"],
            "name": row["name"],
            "status": row["status"],
        }
    )


@requires_session
async def tasks_context(request: web.Request, session: Session) -> web.Response:
    """fetchTasksContext: the org/tenant context is required and checked (tenant guardrail)."""
    body = await request.json()
    context = body.get("context") or {}
    org_id, tenant_id = context.get("organizationId"), context.get("tenantId")
    if not org_id:
        return error(400, "context_required", "context.organizationId is required")
    if refused := scope_mismatch(session, org_id):
        return refused
    db = request.app[STATE].db
    org = await db.fetchrow("SELECT id, name, status FROM organizations WHERE id = $1", org_id)
    if org is None:
        return error(404, "organization_not_found")
    tenant = None
    if tenant_id:
        tenant = await db.fetchrow("SELECT id, organization_id FROM tenants WHERE id = $1", tenant_id)
        if tenant is None:
            return error(404, "tenant_not_found")
        if tenant["organization_id"] != org_id:
            return error(
                403, "tenant_not_in_organization", f"tenant {tenant_id} is not in organization {org_id}"
            )
    product = body.get("productSlug") or "tasks"
    rows = await db.fetch(
        "SELECT feature, quota FROM product_default_entitlements WHERE product_slug = $1", product
    )
    return web.json_response(
        {
            "organization": {"id": org["id"], "name": org["name"], "status": org["status"]},
            "tenant": {"id": tenant["id"], "organizationId": tenant["organization_id"]} if tenant else None,
            "entitlements": [{"feature": r["feature"], "quota": r["quota"]} for r in rows],
        }
    )


@requires_session
async def get_invitation(request: web.Request, session: Session) -> web.Response:
    row = await request.app[STATE].db.fetchrow(
        "SELECT id, organization_id, tenant_id, email, status FROM invitations WHERE id = $1",
        request.match_info["invitation_id"],
    )
    if row is None:
        return error(404, "invitation_not_found")
    return web.json_response(
        {
            "id": row["id"],
            "organizationId": row["organization_id"],
            "tenantId": row["tenant_id"],
            "email": row["email"],
            "status": row["status"],
        }
    )
