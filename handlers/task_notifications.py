"""Queue `task-notifications`: one notification per (task, assignee), one reminder per (task, due date).

Notifications are rows in the tasks DB keyed by a dedupe key, so a retried or re-delivered job adds
nothing. Assignment latency (assignedAt -> notified) is sampled into the capped Redis list
`ma:latency:task-assignment`, read by ma-top and the metrics exporter.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import AwareDatetime, Field
from sqlalchemy import text

from handlers.clients.identity import NotFound
from handlers.context import Handler, IdempotencyKeys, JobContext
from handlers.errors import PermanentError
from handlers.payloads import Id, Payload
from pool.contracts import LATENCY_HIST_KEY, LATENCY_KEY

LATENCY_SAMPLES = 10_000
"""Samples kept in LATENCY_KEY; LATENCY_HIST_KEY is a cumulative histogram (Prometheus-style): fields
`le:<seconds>`, `le:+Inf`, `sum_ms`, `count`."""
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)


class TaskAssigned(Payload):
    task_id: Id
    organization_id: Id
    tenant_id: Id
    assignee_id: Id
    assigned_by: Id
    assigned_at: AwareDatetime


class TaskDueSoon(Payload):
    window_minutes: int = Field(default=60, ge=1, le=24 * 60)


async def task_assigned(ctx: JobContext, payload: TaskAssigned) -> dict[str, Any]:
    try:
        context = await ctx.identity.fetch_tasks_context(
            context={"organizationId": payload.organization_id, "tenantId": payload.tenant_id},
            product_slug=ctx.settings.TASKS_PRODUCT_SLUG,
        )  # a tenant outside the organization is refused here (tenant guardrail)
    except NotFound as missing:
        raise PermanentError(f"{missing.what}: organization or tenant does not exist") from None
    async with ctx.tasks_db.begin() as conn:
        local = (
            await conn.execute(
                text("SELECT status FROM organizations WHERE id = :o"), {"o": payload.organization_id}
            )
        ).scalar()
        if "suspended" in (local, context["organization"]["status"]):
            ctx.log.info(
                "task %s: organization %s is suspended; no notification",
                payload.task_id,
                payload.organization_id,
            )
            return {"notified": False, "reason": "organization suspended"}
        task = (
            await conn.execute(
                text("SELECT organization_id, tenant_id FROM tasks WHERE id = :t"), {"t": payload.task_id}
            )
        ).first()
        if task is not None and (task.organization_id, task.tenant_id) != (
            payload.organization_id,
            payload.tenant_id,
        ):
            raise PermanentError(
                f"task {payload.task_id} is not in organization {payload.organization_id} / "
                f"tenant {payload.tenant_id}; refused"
            )
        created = (
            await conn.execute(
                text(
                    "INSERT INTO notifications (dedupe_key, kind, organization_id, task_id, recipient_id, payload)"
                    " VALUES (:key, 'task.assigned', :org, :task, :to, CAST(:body AS jsonb))"
                    " ON CONFLICT (dedupe_key) DO NOTHING RETURNING created_at"
                ),
                {
                    "key": f"task.assigned:{payload.task_id}:{payload.assignee_id}",
                    "org": payload.organization_id,
                    "task": payload.task_id,
                    "to": payload.assignee_id,
                    "body": json.dumps(
                        {
                            "assignedBy": payload.assigned_by,
                            "assignedAt": payload.assigned_at.isoformat(),
                            "tenantId": payload.tenant_id,
                        }
                    ),
                },
            )
        ).scalar()
    if created is None:
        return {"notified": False, "reason": "already notified"}
    latency_ms = max(0, round((created - payload.assigned_at).total_seconds() * 1000))
    sample = json.dumps(
        {
            "taskId": payload.task_id,
            "organizationId": payload.organization_id,
            "latencyMs": latency_ms,
            "at": created.isoformat(),
        }
    )
    async with ctx.redis.pipeline(transaction=False) as pipe:
        pipe.lpush(LATENCY_KEY, sample)
        pipe.ltrim(LATENCY_KEY, 0, LATENCY_SAMPLES - 1)
        for bound in LATENCY_BUCKETS:
            if latency_ms <= bound * 1000:
                pipe.hincrby(LATENCY_HIST_KEY, f"le:{bound}", 1)
        pipe.hincrby(LATENCY_HIST_KEY, "le:+Inf", 1)
        pipe.hincrby(LATENCY_HIST_KEY, "count", 1)
        pipe.hincrby(LATENCY_HIST_KEY, "sum_ms", latency_ms)
        await pipe.execute()
    return {"notified": True, "latencyMs": latency_ms}


async def task_due_soon(ctx: JobContext, payload: TaskDueSoon) -> dict[str, Any]:
    """Every 5 min (scheduler `task-due-soon`): one set-based insert; the dedupe key holds the due date,
    so a task whose due date moves gets a new reminder and a re-run adds none."""
    async with ctx.tasks_db.begin() as conn:
        result = await conn.execute(
            text("""
            INSERT INTO notifications (dedupe_key, kind, organization_id, task_id, recipient_id, payload)
            SELECT 'task.due-soon:' || t.id || ':' || to_char(t.due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                   'task.due-soon', t.organization_id, t.id, t.assignee_id,
                   jsonb_build_object('dueAt', t.due_at, 'title', t.title)
            FROM tasks t JOIN organizations o ON o.id = t.organization_id
            WHERE o.status = 'active' AND t.status <> 'done' AND t.assignee_id IS NOT NULL
              AND t.due_at > now() AND t.due_at <= now() + make_interval(mins => :window)
            ON CONFLICT (dedupe_key) DO NOTHING
            """),
            {"window": payload.window_minutes},
        )
    reminders = result.rowcount
    ctx.log.info("Due-soon reminders sent: %d (window %d min)", reminders, payload.window_minutes)
    return {"reminders": reminders, "windowMinutes": payload.window_minutes}


HANDLERS: dict[str, Handler] = {
    "task.assigned": task_assigned,
    "task.due-soon": task_due_soon,
}

IDEMPOTENCY_KEYS: IdempotencyKeys = {
    "task.assigned": ("taskId", "assigneeId"),
}
