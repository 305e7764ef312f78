"""Reads of the identity service's data: its database first (read-only), its HTTP API as the fallback."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from handlers.clients.identity import NotFound
from handlers.context import JobContext
from handlers.errors import PermanentError


@dataclass(frozen=True)
class Organization:
    id: str
    name: str
    status: str

    @property
    def tasks_status(self) -> str:
        return "suspended" if self.status == "suspended" else "active"


@dataclass(frozen=True)
class User:
    id: str
    status: str
    is_super_admin: bool


@dataclass(frozen=True)
class Tenant:
    id: str
    organization_id: str
    name: str


async def _from_db(ctx: JobContext, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with ctx.identity_db.connect() as conn:
        return [dict(r) for r in (await conn.execute(text(sql), params)).mappings()]


def _fallback(ctx: JobContext, error: Exception, what: str) -> None:
    ctx.log.warning(
        "identity DB lookup of %s failed (%s); falling back to identity HTTP", what, type(error).__name__
    )


async def organization(ctx: JobContext, organization_id: str) -> Organization | None:
    try:
        rows = await _from_db(
            ctx, "SELECT id, name, status FROM organizations WHERE id = :id", id=organization_id
        )
        return Organization(**rows[0]) if rows else None
    except (SQLAlchemyError, OSError) as error:
        _fallback(ctx, error, f"organization {organization_id}")
    try:
        body = await ctx.identity.organization(organization_id)
    except NotFound:
        return None
    return Organization(body["id"], body["name"], body["status"])


async def tenant(ctx: JobContext, tenant_id: str) -> Tenant | None:
    try:
        rows = await _from_db(
            ctx, "SELECT id, organization_id, name FROM tenants WHERE id = :id", id=tenant_id
        )
        return Tenant(**rows[0]) if rows else None
    except (SQLAlchemyError, OSError) as error:
        _fallback(ctx, error, f"tenant {tenant_id}")
    try:
        body = await ctx.identity.tenant(tenant_id)
    except NotFound:
        return None
    return Tenant(body["id"], body["organizationId"], body["name"])


async def user(ctx: JobContext, user_id: str) -> User | None:
    try:
        rows = await _from_db(ctx, "SELECT id, status, is_super_admin FROM users WHERE id = :id", id=user_id)
        return User(**rows[0]) if rows else None
    except (SQLAlchemyError, OSError) as error:
        _fallback(ctx, error, f"user {user_id}")
    try:
        body = await ctx.identity.call("GET", f"/v1/users/{user_id}", what=f"user {user_id}")
    except NotFound:
        return None
    return User(body["id"], body["status"], bool(body.get("isSuperAdmin")))


async def require_organization(ctx: JobContext, organization_id: str) -> Organization:
    org = await organization(ctx, organization_id)
    if org is None:
        raise PermanentError(f"organization {organization_id} does not exist at identity")
    return org


async def require_tenant_of(ctx: JobContext, organization_id: str, tenant_id: str) -> Tenant:
    """The tenant guardrail: a tenant outside the job's organization is refused before any data is touched."""
    found = await tenant(ctx, tenant_id)
    if found is None:
        raise PermanentError(f"tenant {tenant_id} does not exist at identity")
    if found.organization_id != organization_id:
        raise PermanentError(f"tenant {tenant_id} is not in organization {organization_id}; refused")
    return found


async def default_entitlements(
    ctx: JobContext, organization_id: str, product_slug: str
) -> list[dict[str, Any]]:
    try:
        return await _from_db(
            ctx,
            "SELECT feature, quota FROM product_default_entitlements WHERE product_slug = :p",
            p=product_slug,
        )
    except (SQLAlchemyError, OSError) as error:
        _fallback(ctx, error, f"default entitlements of {product_slug}")
    context = await ctx.identity.fetch_tasks_context(
        context={"organizationId": organization_id, "tenantId": None}, product_slug=product_slug
    )
    return list(context.get("entitlements") or [])
