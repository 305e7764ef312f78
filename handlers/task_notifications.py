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

RECORD_LATENCY = """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
local ms = tonumber(ARGV[3])
for i = 4, #ARGV do
  if ms <= tonumber(ARGV[i]) * 1000 then redis.call('HINCRBY', KEYS[2], 'le:' .. ARGV[i], 1) end
end
redis.call('HINCRBY', KEYS[2], 'le:+Inf', 1)
redis.call('HINCRBY', KEYS[2], 'count', 1)
redis.call('HINCRBY', KEYS[2], 'sum_ms', ms)
"""
"""One latency sample and the histogram's buckets in one atomic call: one command on the pool's shared
auto-pipelined connection (a redis-py pipeline takes a pooled connection of its own: up to one per running job).
KEYS: samples list, histogram hash; ARGV: sample, samples kept, latency ms, then each bucket's bound in seconds
(its field is le:<bound>, as str() writes it)."""


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
    await ctx.redis.eval(
        RECORD_LATENCY,
        2,
        LATENCY_KEY,
        LATENCY_HIST_KEY,
        sample,
        LATENCY_SAMPLES,
        latency_ms,
        *LATENCY_BUCKETS,
    )
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
