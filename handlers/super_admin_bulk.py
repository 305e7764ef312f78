"""Queue `super-admin.bulk-job`: privileged bulk activate / suspend / export (DESIGN.md sections 3 and 5).

- The actor must be an active super admin in the identity DB (HTTP fallback); otherwise the job fails at once
  and nothing is changed.
- activate/suspend: every item goes through the identity admin API, at most MA_BULK_ITEM_CONCURRENCY at a time,
  with an idempotency key per (bulk job, operation, item). After each item a checkpoint is stored in the job's
  progress, so a retried, throttled or stall-recovered job resumes after the items already done; an item
  in flight when the process died is replayed with the same key and identity does not apply it twice.
- export: a server-side cursor streams rows that PostgreSQL formats (one CSV or JSON line each) through gzip in a
  thread into a temporary file, renamed when complete. Memory is two batches, whatever the row count.
- telemetry: `super-admin.bulk-job.metrics` gets a message about once a second while running and a final one;
  the last message of each bulk job is also kept in the hash `ma:bulk-jobs` for dashboards opened later.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from sqlalchemy import text

from handlers import lookups
from handlers.clients.identity import IdentityUnavailable, NotFound, TokenRefused
from handlers.context import JobContext
from handlers.errors import PermanentError, ThrottledError
from handlers.payloads import Id, Payload

METRICS_CHANNEL = "super-admin.bulk-job.metrics"
LAST_STATE_KEY = "ma:bulk-jobs"
"""Hash bulkJobId -> JSON of its last telemetry message (pool/collector.py reads it)."""
LAST_STATE_KEEP = 200
ITEMS_KEY = "ma:bulk-items:{job_id}"
"""A filter's matches, frozen at the first run so a resumed job walks the same list."""
ITEMS_TTL_S = 15 * 24 * 3600
MAX_ITEMS = 100_000
FAILURES_LISTED = 1_000
EXPORT_CHUNK_ROWS = 2_000
"""Rows per chunk the export query returns; a fetch takes EXPORT_FETCH_CHUNKS of them (~1 MB)."""
EXPORT_FETCH_CHUNKS = 4
TELEMETRY_EVERY_S = 1.0
ITEM_RETRIES = 3

Target = Literal["users", "organizations"]
Status = Literal["active", "suspended"]


class BulkFilter(Payload):
    status: Status | None = None
    organization_id: Id | None = None
    """users only: members of this organization."""
    email_domain: str | None = Field(default=None, min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.\-]+$")
    """users only."""
    created_after: datetime | None = None
    created_before: datetime | None = None

    def criteria(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class _Targeted(Payload):
    bulk_job_id: Id
    actor_id: Id
    target: Target

    @model_validator(mode="after")
    def _filter_fits_target(self) -> _Targeted:
        flt = getattr(self, "filter", None)
        if self.target == "organizations" and flt is not None:
            for name, alias in (("organization_id", "organizationId"), ("email_domain", "emailDomain")):
                if getattr(flt, name) is not None:
                    raise ValueError(f"filter.{alias} applies to users, not organizations")
        return self


class BulkChange(_Targeted):
    ids: list[Id] | None = Field(default=None, min_length=1, max_length=MAX_ITEMS)
    filter: BulkFilter | None = None
    reason: str = Field(min_length=1, max_length=500)

    @model_validator(mode="after")
    def _one_selection(self) -> BulkChange:
        if (self.ids is None) == (self.filter is None):
            raise ValueError("give exactly one of ids or filter")
        if self.filter is not None and not self.filter.criteria():
            raise ValueError("filter needs at least one criterion (an empty filter would select everything)")
        return self


class BulkExport(_Targeted):
    filter: BulkFilter = Field(default_factory=BulkFilter)
    format: Literal["csv", "jsonl"] = "csv"


# -- the actor and the selection ------------------------------------------------------------------------
async def require_super_admin(ctx: JobContext, actor_id: str) -> None:
    actor = await lookups.user(ctx, actor_id)
    if actor is None:
        raise PermanentError(f"actorId {actor_id} is not a user at identity; refused, nothing changed")
    if not actor.is_super_admin or actor.status != "active":
        raise PermanentError(f"actorId {actor_id} is not an active super admin; refused, nothing changed")


_TABLE = {"users": "users", "organizations": "organizations"}


def _where(target: Target, flt: BulkFilter) -> tuple[str, dict[str, Any]]:
    """A filter's conditions (joined by AND; column names are ours, values are bound parameters)."""
    clauses, params = [], {}
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


async def _items(ctx: JobContext, payload: BulkChange) -> list[str]:
    if payload.ids is not None:
        return list(dict.fromkeys(payload.ids))  # duplicates would be applied once anyway; count them once
    key = ITEMS_KEY.format(job_id=ctx.job_id)
    if ctx.progress and await ctx.redis.exists(key):
        return list(await ctx.redis.lrange(key, 0, -1))
    assert payload.filter is not None
    where, params = _where(payload.target, payload.filter)
    sql = f"SELECT t.id FROM {_TABLE[payload.target]} t WHERE {where} ORDER BY t.id LIMIT {MAX_ITEMS + 1}"
    async with ctx.identity_db.connect() as conn:
        ids = [row[0] for row in await conn.execute(text(sql), params)]
    if len(ids) > MAX_ITEMS:
        raise PermanentError(f"filter matches more than {MAX_ITEMS} {payload.target}; narrow it")
    async with ctx.redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        for start in range(0, len(ids), 10_000):
            pipe.rpush(key, *ids[start : start + 10_000])
        pipe.expire(key, ITEMS_TTL_S)
        if ids:
            await pipe.execute()
    return ids


# -- telemetry -----------------------------------------------------------------------------------------------
def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Progress:
    """The checkpoint stored in the job's progress. Items are walked in order: every index below `next` is
    done, plus the few in `doneAbove` (finished out of order while earlier ones were in flight)."""

    bulk_job_id: str
    operation: str
    total: int
    started_at: float
    next: int = 0
    done_above: set[int] = field(default_factory=set)
    succeeded: int = 0
    failed: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def processed(self) -> int:
        return self.succeeded + self.failed

    def is_done(self, index: int) -> bool:
        return index < self.next or index in self.done_above

    def mark(self, index: int, failure: dict[str, str] | None) -> None:
        self.done_above.add(index)
        while self.next in self.done_above:
            self.done_above.discard(self.next)
            self.next += 1
        if failure is None:
            self.succeeded += 1
        else:
            self.failed += 1
            if len(self.failures) < FAILURES_LISTED:
                self.failures.append(failure)

    def dump(self) -> dict[str, Any]:
        return {
            "bulkJobId": self.bulk_job_id,
            "operation": self.operation,
            "total": self.total,
            "processed": self.processed,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "startedAt": self.started_at,
            "next": self.next,
            "doneAbove": sorted(self.done_above),
            "failures": self.failures,
        }

    @classmethod
    def resume(cls, saved: Any, bulk_job_id: str, operation: str, total: int) -> Progress:
        fresh = cls(bulk_job_id, operation, total, time.time())
        if (
            not isinstance(saved, dict)
            or saved.get("bulkJobId") != bulk_job_id
            or saved.get("total") != total
        ):
            return fresh
        try:
            return cls(
                bulk_job_id,
                operation,
                total,
                float(saved["startedAt"]),
                int(saved["next"]),
                {int(i) for i in saved.get("doneAbove", [])},
                int(saved["succeeded"]),
                int(saved["failed"]),
                list(saved.get("failures", [])),
            )
        except (KeyError, TypeError, ValueError):
            return fresh


class Telemetry:
    """Publishes the bulk job's state on the metrics channel and keeps the last one in `ma:bulk-jobs`."""

    def __init__(self, ctx: JobContext, progress: Progress) -> None:
        self.ctx = ctx
        self.progress = progress
        self.run_started = time.monotonic()
        self.processed_at_start = progress.processed
        self.host = socket.gethostname()
        self.pid = os.getpid()

    def message(self, status: str, **extra: Any) -> dict[str, Any]:
        p = self.progress
        elapsed = max(time.monotonic() - self.run_started, 1e-6)
        return {
            "bulkJobId": p.bulk_job_id,
            "jobId": self.ctx.job_id,
            "operation": p.operation,
            "status": status,
            "total": p.total,
            "processed": p.processed,
            "succeeded": p.succeeded,
            "failed": p.failed,
            "throughputPerSec": round((p.processed - self.processed_at_start) / elapsed, 2),
            "startedAt": _iso(p.started_at),
            "updatedAt": _iso(time.time()),
            "host": self.host,
            "pid": self.pid,
            **extra,
        }

    async def publish(self, status: str, **extra: Any) -> None:
        raw = json.dumps(self.message(status, **extra), separators=(",", ":"))
        async with self.ctx.redis.pipeline(transaction=False) as pipe:
            pipe.hset(LAST_STATE_KEY, self.progress.bulk_job_id, raw)
            pipe.publish(METRICS_CHANNEL, raw)
            pipe.hlen(LAST_STATE_KEY)
            *_, size = await pipe.execute()
        if status != "running" and size > LAST_STATE_KEEP:
            await self._trim()

    async def _trim(self) -> None:
        """Keep the newest LAST_STATE_KEEP records (the dashboards show at most 50 of the last day)."""
        records = await self.ctx.redis.hgetall(LAST_STATE_KEY)

        def updated(item: tuple[str, str]) -> str:
            try:
                return str(json.loads(item[1]).get("updatedAt", ""))
            except (ValueError, AttributeError):
                return ""

        stale = [key for key, _ in sorted(records.items(), key=updated)[: len(records) - LAST_STATE_KEEP]]
        if stale:
            await self.ctx.redis.hdel(LAST_STATE_KEY, *stale)

    async def ticker(self) -> None:
        while True:
            await asyncio.sleep(TELEMETRY_EVERY_S)
            try:
                await self.publish("running")
            except Exception as error:  # noqa: BLE001 - telemetry must never stop the job
                self.ctx.log.warning("bulk telemetry publish failed: %s", type(error).__name__)


# -- activate / suspend ------------------------------------------------------------------------------------
class _Stop(Exception):
    """Stop launching items: identity throttled us or is unavailable."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


async def _apply_one(ctx: JobContext, payload: BulkChange, operation: str, item_id: str) -> str | None:
    """Apply one item; None when done, else the reason it failed for good. Throttling and identity being
    unavailable (after a few quick tries) stop the job instead: those items are not failed, just not done."""
    path = f"/v1/admin/{payload.target}/{item_id}/{operation}"
    key = f"bulk:{payload.bulk_job_id}:{operation}:{payload.target}:{item_id}"
    body = {"reason": payload.reason, "actorId": payload.actor_id, "bulkJobId": payload.bulk_job_id}
    for attempt in range(ITEM_RETRIES):
        try:
            await ctx.identity.call(
                "POST",
                path,
                json=body,
                headers={"Idempotency-Key": key},
                what=f"{operation} {payload.target} {item_id}",
            )
            return None
        except NotFound:
            return f"{payload.target[:-1]} {item_id} not found at identity"
        except PermanentError as error:
            return str(error)
        except ThrottledError as error:
            raise _Stop(error) from None
        except (IdentityUnavailable, TokenRefused) as error:
            if attempt == ITEM_RETRIES - 1:
                raise _Stop(error) from None
            await asyncio.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


async def _change(
    ctx: JobContext, payload: BulkChange, operation: Literal["activate", "suspend"]
) -> dict[str, Any]:
    await require_super_admin(ctx, payload.actor_id)
    items = await _items(ctx, payload)
    progress = Progress.resume(ctx.progress, payload.bulk_job_id, operation, len(items))
    resumed = progress.processed
    telemetry = Telemetry(ctx, progress)
    limit = int(getattr(ctx.settings, "MA_BULK_ITEM_CONCURRENCY", 8))
    slots = asyncio.Semaphore(limit)
    checkpoint_lock = asyncio.Lock()
    stop: list[_Stop] = []

    async def checkpoint() -> None:
        async with checkpoint_lock:
            if ctx.save_progress is not None:
                await ctx.save_progress(progress.dump())

    async def run(index: int, item_id: str) -> None:
        try:
            if stop:
                return
            reason = await _apply_one(ctx, payload, operation, item_id)
        except _Stop as error:
            stop.append(error)
            return
        finally:
            slots.release()
        failure = None
        if reason is not None:
            failure = {"id": item_id, "reason": reason}
            ctx.log.warning(
                "Super admin bulk job operation failed: bulkJobId=%s operation=%s %s=%s reason=%s",
                payload.bulk_job_id,
                operation,
                payload.target,
                item_id,
                reason,
            )
            ctx.event(
                "bulk-item-failed",
                "Super admin bulk job operation failed",
                bulkJobId=payload.bulk_job_id,
                operation=operation,
                item=item_id,
                reason=reason,
            )
        progress.mark(index, failure)
        await checkpoint()

    await telemetry.publish("running")
    ticker = asyncio.create_task(telemetry.ticker())
    try:
        async with asyncio.TaskGroup() as group:
            for index, item_id in enumerate(items):
                if progress.is_done(index):
                    continue
                await slots.acquire()
                if stop:
                    slots.release()
                    break
                group.create_task(run(index, item_id))
    except BaseExceptionGroup as group_error:  # e.g. Redis gone while checkpointing: report the cause itself
        raise group_error.exceptions[0] from None
    finally:
        ticker.cancel()
    if stop:
        cause = stop[0].cause
        if isinstance(cause, ThrottledError):
            await telemetry.publish("throttled", retryAfter=cause.retry_after)
            retry = max(e.cause.retry_after for e in stop if isinstance(e.cause, ThrottledError))
            raise ThrottledError(f"identity throttled bulk job {payload.bulk_job_id}: {cause}", retry)
        await telemetry.publish("failed" if ctx.final_attempt else "running", error=str(cause))
        raise cause
    if progress.failures:  # listed in the selection's order, whatever order the concurrent calls ended in
        order = {item: i for i, item in enumerate(items)}
        progress.failures.sort(key=lambda f: order.get(f["id"], 0))
    summary = {
        "bulkJobId": payload.bulk_job_id,
        "operation": operation,
        "target": payload.target,
        "total": progress.total,
        "succeeded": progress.succeeded,
        "failed": progress.failed,
        "resumedAfter": resumed,
        "failures": progress.failures,
        "failuresTruncated": progress.failed > len(progress.failures),
    }
    if progress.total and progress.failed == progress.total:
        await telemetry.publish("failed")
        await ctx.redis.delete(ITEMS_KEY.format(job_id=ctx.job_id))
        first = "; ".join(f"{f['id']}: {f['reason']}" for f in progress.failures[:3])
        raise PermanentError(
            f"every item of bulk job {payload.bulk_job_id} failed ({progress.failed}): {first}"
        )
    await telemetry.publish("completed")
    await ctx.redis.delete(ITEMS_KEY.format(job_id=ctx.job_id))
    return summary


async def bulk_activate(ctx: JobContext, payload: BulkChange) -> dict[str, Any]:
    return await _change(ctx, payload, "activate")


async def bulk_suspend(ctx: JobContext, payload: BulkChange) -> dict[str, Any]:
    return await _change(ctx, payload, "suspend")


# -- export ----------------------------------------------------------------------------------------------------
def _csv(column: str) -> str:
    return f"'\"' || replace({column}::text, '\"', '\"\"') || '\"'"


COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    # (header / JSON key, column, kind). Timestamps print in UTC (the export transaction sets TIME ZONE 'UTC'):
    # `2026-11-28 15:26:42.967798+00` in CSV (what COPY prints; to_char() would cost a third of the export),
    # ISO 8601 `2026-11-28T15:26:42.967798+00:00` in JSON.
    "users": [
        ("id", "id", "text"),
        ("email", "email", "text"),
        ("fullName", "full_name", "text"),
        ("status", "status", "text"),
        ("isSuperAdmin", "is_super_admin", "bool"),
        ("createdAt", "created_at", "time"),
    ],
    "organizations": [
        ("id", "id", "text"),
        ("name", "name", "text"),
        ("slug", "slug", "text"),
        ("status", "status", "text"),
        ("createdAt", "created_at", "time"),
    ],
}


def export_line_sql(target: Target, fmt: str) -> str:
    """One row's line, formatted by PostgreSQL: CSV (RFC 4180: text quoted, quotes doubled) or a JSON object."""
    columns = COLUMNS[target]
    if fmt == "csv":
        return " || ',' || ".join(
            _csv(f"t.{column}") if kind == "text" else f"t.{column}::text" for _, column, kind in columns
        )
    pairs = ", ".join(f"'{key}', t.{column}" for key, column, _ in columns)
    return f"json_build_object({pairs})::text"


def export_sql(target: Target, fmt: str, where: str, chunk_rows: int = EXPORT_CHUNK_ROWS) -> str:
    """Rows in id order, as chunks of `chunk_rows` lines per result row, for a server-side cursor.

    Each step of the recursive query takes the next rows after the previous chunk's last id (keyset, on the
    primary key index) and joins their lines into one bytea, so the client receives ~1/chunk_rows as many rows:
    per-row client work (asyncpg records, Python strings) was two thirds of the export time. One statement, so
    one snapshot; the cursor streams chunks as they are fetched, never the whole result.
    """
    table = _TABLE[target]
    extra = f" AND {where}" if where else ""
    return f"""WITH RECURSIVE chunk(last_id, body, n) AS (
    SELECT ''::text, NULL::text, -1::bigint
  UNION ALL
    SELECT x.last_id, x.body, x.n FROM chunk c CROSS JOIN LATERAL (
        SELECT max(s.id) AS last_id, string_agg(s.line, E'\\n' ORDER BY s.id) || E'\\n' AS body, count(*) AS n
        FROM (SELECT t.id, {export_line_sql(target, fmt)} AS line FROM {table} t
              WHERE t.id > c.last_id{extra} ORDER BY t.id LIMIT {int(chunk_rows)}) s
    ) x WHERE c.n <> 0
) SELECT convert_to(c.body, 'UTF8'), c.n FROM chunk c WHERE c.n > 0"""


class _GzipFile:
    """The thread side of an export: gzip, write and hash. Only ever called from one thread at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.raw = open(path, "wb")  # noqa: SIM115
        self.digest = hashlib.sha256()
        self.size = 0
        self.gz = gzip.GzipFile(fileobj=self, mode="wb", compresslevel=6, mtime=0)

    def write(self, data: bytes) -> int:  # the GzipFile's sink
        self.digest.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()

    def add(self, data: bytes) -> None:
        self.gz.write(data)

    def finish(self) -> None:
        self.gz.close()
        self.raw.flush()
        os.fsync(self.raw.fileno())
        self.raw.close()

    def abandon(self) -> None:
        self.raw.close()
        self.path.unlink(missing_ok=True)


async def bulk_export(ctx: JobContext, payload: BulkExport) -> dict[str, Any]:
    await require_super_admin(ctx, payload.actor_id)
    export_dir = Path(getattr(ctx.settings, "MA_EXPORT_DIR", "var/exports"))
    await asyncio.to_thread(export_dir.mkdir, parents=True, exist_ok=True)
    final = export_dir / f"{payload.bulk_job_id}-{payload.target}.{payload.format}.gz"
    partial = export_dir / f".{final.name}.{ctx.job_id}.part"
    where, params = _where(payload.target, payload.filter)
    progress = Progress(payload.bulk_job_id, "export", 0, time.time())
    telemetry = Telemetry(ctx, progress)
    sink = await asyncio.to_thread(_GzipFile, partial)
    ticker: asyncio.Task[None] | None = None
    try:
        async with ctx.identity_db.connect() as conn:
            conn = await conn.execution_options(
                isolation_level="REPEATABLE READ"
            )  # count and rows: one snapshot
            await conn.begin()
            count_sql = f"SELECT count(*) FROM {_TABLE[payload.target]} t{' WHERE ' + where if where else ''}"
            progress.total = int((await conn.execute(text(count_sql), params)).scalar_one())
            await telemetry.publish("running")
            ticker = asyncio.create_task(telemetry.ticker())
            if payload.format == "csv":
                header = ",".join(key for key, _, _ in COLUMNS[payload.target]) + "\n"
                await asyncio.to_thread(sink.add, header.encode())
            await conn.execute(text("SET LOCAL TIME ZONE 'UTC'"))
            driver = (await conn.get_raw_connection()).driver_connection
            sql, args = _positional(text(export_sql(payload.target, payload.format, where)), params)
            cursor = await driver.cursor(sql, *args)
            pending: asyncio.Future[None] | None = None
            while chunks := await cursor.fetch(EXPORT_FETCH_CHUNKS):
                data = b"".join(body for body, _ in chunks)
                if pending is not None:
                    await pending  # one batch compressing in a thread while the next is fetched
                pending = asyncio.ensure_future(asyncio.to_thread(sink.add, data))
                progress.succeeded += sum(n for _, n in chunks)
            if pending is not None:
                await pending
            await conn.commit()
        await asyncio.to_thread(sink.finish)
        await asyncio.to_thread(os.replace, partial, final)
    except BaseException:
        await asyncio.to_thread(sink.abandon)
        if ticker is not None:
            ticker.cancel()
        await telemetry.publish("failed" if ctx.final_attempt else "running")
        raise
    ticker.cancel() if ticker is not None else None
    if progress.processed != progress.total:  # rows changed between count and read: report what was written
        progress.total = progress.processed
    await telemetry.publish("completed")
    ctx.log.info(
        "bulk export %s: %d %s rows, %d bytes to %s",
        payload.bulk_job_id,
        progress.processed,
        payload.target,
        sink.size,
        final,
    )
    return {
        "bulkJobId": payload.bulk_job_id,
        "operation": "export",
        "target": payload.target,
        "format": payload.format,
        "path": str(final.resolve()),
        "rows": progress.processed,
        "bytes": sink.size,
        "sha256": sink.digest.hexdigest(),
    }


def _positional(clause: Any, params: dict[str, Any]) -> tuple[str, list[Any]]:
    """`:name` parameters of a text() clause as asyncpg's `$n`, for a cursor on the driver connection."""
    from sqlalchemy.dialects import postgresql

    compiled = clause.bindparams(**params).compile(dialect=postgresql.asyncpg.dialect())
    order = compiled.positiontup or []
    return str(compiled), [params[name] for name in order]


HANDLERS = {
    "bulk.activate": bulk_activate,
    "bulk.suspend": bulk_suspend,
    "bulk.export": bulk_export,
}
