"""Which items a bulk job works on: the ids it was given, or the rows its filter matches in the identity DB.

A filter's matches are frozen in Redis (`bulk_items_key(jobId)`) at the first run, so a retried or
stall-recovered job walks the same list as the run that wrote its checkpoint, whatever changed in between.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Literal, cast

from sqlalchemy import text

from handlers.context import JobContext
from handlers.errors import PermanentError
from pool.contracts import bulk_items_key

if TYPE_CHECKING:
    from handlers.super_admin_bulk import BulkFilter

Target = Literal["users", "organizations"]
Params = dict[str, str | datetime]
"""Bound parameters of a filter's SQL, by name."""

MAX_ITEMS = 100_000
"""Items one bulk job may select (ids given, or a filter's matches)."""
ITEMS_TTL_S = 15 * 24 * 3600
TABLES: dict[Target, str] = {"users": "users", "organizations": "organizations"}


def where_clause(target: Target, flt: BulkFilter) -> tuple[str, Params]:
    """A filter's conditions (joined by AND; column names are ours, values are bound parameters)."""
    clauses: list[str] = []
    params: Params = {}
    if flt.status is not None:
        clauses.append("t.status = :status")
        params["status"] = flt.status
    if flt.created_after is not None:
        clauses.append("t.created_at >= :created_after")
        params["created_after"] = flt.created_after
    if flt.created_before is not None:
        clauses.append("t.created_at < :created_before")
        params["created_before"] = flt.created_before
    if target == "users" and flt.organization_id is not None:
        clauses.append(
            "EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = t.id AND m.organization_id = :org)"
        )
        params["org"] = flt.organization_id
    if target == "users" and flt.email_domain is not None:
        clauses.append("lower(split_part(t.email, '@', 2)) = lower(:domain)")
        params["domain"] = flt.email_domain
    return " AND ".join(clauses), params


async def selected_items(
    ctx: JobContext, target: Target, ids: list[str] | None, flt: BulkFilter | None
) -> list[str]:
    """The items in the order they are walked: the ids given, or the filter's matches by id (frozen)."""
    if ids is not None:
        return list(dict.fromkeys(ids))  # duplicates would be applied once anyway; count them once
    key = bulk_items_key(ctx.job_id)
    if ctx.progress and await ctx.redis.exists(key):
        # The pool's Redis client decodes responses (pool/connection.py): these are str.
        return cast(list[str], await ctx.redis.lrange(key, 0, -1))
    assert flt is not None
    where, params = where_clause(target, flt)
    sql = f"SELECT t.id FROM {TABLES[target]} t WHERE {where} ORDER BY t.id LIMIT {MAX_ITEMS + 1}"
    async with ctx.identity_db.connect() as conn:
        matches = [row[0] for row in await conn.execute(text(sql), params)]
    if len(matches) > MAX_ITEMS:
        raise PermanentError(f"filter matches more than {MAX_ITEMS} {target}; narrow it")
    async with ctx.redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        for start in range(0, len(matches), 10_000):
            pipe.rpush(key, *matches[start : start + 10_000])
        pipe.expire(key, ITEMS_TTL_S)
        if matches:
            await pipe.execute()
    return matches


async def forget_items(ctx: JobContext) -> None:
    """Drop the frozen matches once the job has ended (completed, or every item failed)."""
    await ctx.redis.delete(bulk_items_key(ctx.job_id))
