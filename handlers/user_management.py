"""Queue `user-management-jobs`: invitations, session cleanup, and the 24-hourly impersonation cleanup."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from handlers import lookups
from handlers.clients.identity import NotFound
from handlers.context import Handler, IdempotencyKeys, JobContext
from handlers.errors import PermanentError
from handlers.payloads import Email, Id, Payload


class InvitationSend(Payload):
    invitation_id: Id
    organization_id: Id
    tenant_id: Id | None = None
    email: Email
    role: str = Field(min_length=1, max_length=64)
    invited_by: Id
    redirect_to: str | None = Field(default=None, max_length=2048)


class SessionCleanup(Payload):
    older_than_days: int = Field(default=30, ge=1, le=3650)


class ImpersonationCleanup(Payload):
    pass


async def invitation_send(ctx: JobContext, payload: InvitationSend) -> dict[str, Any]:
    """Supabase invite, then mark the invitation sent. Idempotent per invitationId: a sent invitation is
    not re-invited, and an address Supabase already registered (an earlier try) counts as done."""
    if payload.tenant_id:
        await lookups.require_tenant_of(ctx, payload.organization_id, payload.tenant_id)
    try:
        invitation = await ctx.identity.call(
            "GET", f"/v1/invitations/{payload.invitation_id}", what=f"invitation {payload.invitation_id}"
        )
    except NotFound:
        raise PermanentError(f"invitation {payload.invitation_id} does not exist at identity") from None
    if invitation.get("organizationId") != payload.organization_id:
        raise PermanentError(
            f"invitation {payload.invitation_id} is not in organization {payload.organization_id}"
        )
    if invitation.get("status") == "sent":
        return {"invitationId": payload.invitation_id, "alreadySent": True}
    invited = await ctx.supabase.invite(
        payload.email,
        data={
            "invitationId": payload.invitation_id,
            "organizationId": payload.organization_id,
            "tenantId": payload.tenant_id,
            "role": payload.role,
            "invitedBy": payload.invited_by,
        },
        redirect_to=payload.redirect_to,
    )
    await ctx.identity.call(
        "POST",
        f"/v1/invitations/{payload.invitation_id}/sent",
        what=f"mark invitation {payload.invitation_id} sent",
    )
    return {
        "invitationId": payload.invitation_id,
        "alreadySent": False,
        "alreadyRegistered": invited["alreadyRegistered"],
    }


async def session_cleanup(ctx: JobContext, payload: SessionCleanup) -> dict[str, Any]:
    result = await ctx.identity.call(
        "POST",
        "/v1/admin/sessions/cleanup",
        json={"olderThanDays": payload.older_than_days},
        what="session cleanup",
    )
    deleted = int(result.get("deleted", 0))
    ctx.log.info("Expired sessions purged: %d (older than %d days)", deleted, payload.older_than_days)
    ctx.event("scheduled-task", f"Expired sessions purged: {deleted}", items=str(deleted))
    return {"deleted": deleted, "olderThanDays": payload.older_than_days}


async def impersonation_cleanup(ctx: JobContext, payload: ImpersonationCleanup) -> dict[str, Any]:
    """Every 24 h (scheduler `impersonation-cleanup`): identity retires expired impersonation tokens and
    writes the audit events; we log the runbook's line with the count."""
    result = await ctx.identity.call("POST", "/v1/admin/impersonation/cleanup", what="impersonation cleanup")
    retired = int(result.get("retired", 0))
    ctx.log.info("Expired impersonation sessions cleaned: %d", retired)
    ctx.event("scheduled-task", f"Expired impersonation sessions cleaned: {retired}", items=str(retired))
    return {"retired": retired}


HANDLERS: dict[str, Handler] = {
    "invitation.send": invitation_send,
    "session.cleanup": session_cleanup,
    "impersonation.cleanup": impersonation_cleanup,
}

IDEMPOTENCY_KEYS: IdempotencyKeys = {
    "invitation.send": ("invitationId",),
}
