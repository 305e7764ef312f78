"""Queue `super-admin.bulk-job`: privileged bulk activate / suspend / export over users or organizations.

- The actor must be an active super admin in the identity DB (HTTP fallback); otherwise the job fails at once
  and nothing is changed.
- activate/suspend: every item goes through the identity admin API, at most MA_BULK_ITEM_CONCURRENCY at a time,
  with an idempotency key per (bulk job, operation, item). After each item a checkpoint is stored in the job's
  progress, so a retried, throttled or stall-recovered job resumes after the items already done; an item
  in flight when the process died is replayed with the same key and identity does not apply it twice.
- export: a server-side cursor streams rows that PostgreSQL formats (one CSV or JSON line each) through gzip in a
  thread into a temporary file, renamed when complete, or (MA_EXPORT_URL) into an S3 multipart upload a part at a
  time, aborted when the attempt fails. Memory is two batches (and two parts), whatever the row count.
- telemetry: `BULK_METRICS_CHANNEL` gets a message about once a second while running and a final one;
  the last message of each bulk job is also kept in the hash `BULK_JOBS_KEY` for dashboards opened later.
- failed items: one log line each (the runbook's `Super admin bulk job operation failed`), and on the event
  stream at most one `bulk-item-failed` event a second per bulk job, with counts and a sample.
- a job that fails or is retried as a whole (actor refused, token refused, identity unavailable, every item
  failed, an export cut off) logs the same runbook line once, with `scope=job`, the bulk job id, whether it
  will be retried and the reason; a throttled job is deferred, not failed, and logs the queue's throttle line.

This module is the job's contract (payloads, results) and the order of its steps; the steps themselves live
in `handlers/bulk/` (selection, apply, checkpoint, telemetry, failures, export).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from datetime import datetime
from typing import Any, Literal, NotRequired, TypedDict, TypeVar

from pydantic import Field, model_validator

from handlers import lookups
from handlers.bulk import selection
from handlers.bulk.apply import Operation, apply_all
from handlers.bulk.checkpoint import Failure, Progress
from handlers.bulk.destination import destination_for
from handlers.bulk.export import Format, write_export
from handlers.bulk.s3_upload import S3Upload
from handlers.bulk.selection import MAX_ITEMS, Target
from handlers.bulk.telemetry import BulkTelemetry
from handlers.context import Handler, IdempotencyKeys, JobContext
from handlers.errors import PermanentError, ThrottledError
from handlers.payloads import Id, Payload

Status = Literal["active", "suspended"]
_R = TypeVar("_R")


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
    format: Format = "csv"


class ChangeSummary(TypedDict):
    """bulk.activate / bulk.suspend's result."""

    bulkJobId: str
    operation: Operation
    target: Target
    total: int
    succeeded: int
    failed: int
    resumedAfter: int
    """Items already done by earlier runs when this run started."""
    failures: list[Failure]
    """The first FAILURES_LISTED failed items, in the selection's order."""
    failuresTruncated: bool


class ExportSummary(TypedDict):
    """bulk.export's result: `path` for an export to MA_EXPORT_DIR; `url`, `presignedUrl` and `expiresAt` for
    one to MA_EXPORT_URL's bucket."""

    bulkJobId: str
    operation: Literal["export"]
    target: Target
    format: Format
    path: NotRequired[str]
    """The file (absolute path)."""
    url: NotRequired[str]
    """The object, as s3://bucket/key."""
    presignedUrl: NotRequired[str]
    """A GET URL for the object that needs no credentials, valid until `expiresAt` (MA_EXPORT_URL_TTL_S)."""
    expiresAt: NotRequired[str]
    """ISO 8601, UTC."""
    rows: int
    bytes: int
    sha256: str
    """Of the gzip bytes as written (the file, or the object)."""


async def require_super_admin(ctx: JobContext, actor_id: str) -> None:
    actor = await lookups.user(ctx, actor_id)
    if actor is None:
        raise PermanentError(f"actorId {actor_id} is not a user at identity; refused, nothing changed")
    if not actor.is_super_admin or actor.status != "active":
        raise PermanentError(f"actorId {actor_id} is not an active super admin; refused, nothing changed")


async def _change(ctx: JobContext, payload: BulkChange, operation: Operation) -> ChangeSummary:
    """Apply `operation` to the selection from where the checkpoint stopped. Identity throttling defers the
    job (ThrottledError), identity unavailable fails this attempt (retried, resuming); an item that fails for
    good is counted and listed, and the job completes with a summary unless every item failed."""
    await require_super_admin(ctx, payload.actor_id)
    items = await selection.selected_items(ctx, payload.target, payload.ids, payload.filter)
    progress = Progress.resume(ctx.progress, payload.bulk_job_id, operation, len(items))
    resumed = progress.processed
    telemetry = BulkTelemetry(ctx, progress)
    await telemetry.start()
    try:
        stops = await apply_all(ctx, payload, operation, items, progress)
    finally:
        telemetry.stop()
    if stops:
        cause = stops[0].cause
        if isinstance(cause, ThrottledError):
            await telemetry.publish("throttled", retry_after=cause.retry_after)
            retry = max(e.cause.retry_after for e in stops if isinstance(e.cause, ThrottledError))
            raise ThrottledError(f"identity throttled bulk job {payload.bulk_job_id}: {cause}", retry)
        await telemetry.publish("failed" if ctx.final_attempt else "running", error=str(cause))
        raise cause
    progress.sort_failures(items)
    summary: ChangeSummary = {
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
        await selection.forget_items(ctx)
        first = "; ".join(f"{f['id']}: {f['reason']}" for f in progress.failures[:3])
        raise PermanentError(
            f"every item of bulk job {payload.bulk_job_id} failed ({progress.failed}): {first}"
        )
    await telemetry.publish("completed")
    await selection.forget_items(ctx)
    return summary


async def _whole_job(ctx: JobContext, bulk_job_id: str, operation: str, work: Awaitable[_R]) -> _R:
    """Run the job's steps; if they fail as a whole, log the runbook's line once before BullMQ hears of it, so
    a grep for `Super admin bulk job operation failed` finds whole-job failures as well as failed items."""
    try:
        return await work
    except ThrottledError:
        raise  # deferred, not failed: the queue's throttle line says so
    except Exception as error:
        permanent = isinstance(error, PermanentError)
        reason = str(error) if permanent else f"{type(error).__name__}: {error}"
        ctx.log.warning(
            "Super admin bulk job operation failed: bulkJobId=%s operation=%s scope=job job=%s try=%d %s "
            "reason=%s",
            bulk_job_id,
            operation,
            ctx.job_id,
            ctx.attempt,
            "failed" if permanent or ctx.final_attempt else "will-retry",
            reason,
        )
        raise


async def bulk_activate(ctx: JobContext, payload: BulkChange) -> ChangeSummary:
    return await _whole_job(ctx, payload.bulk_job_id, "activate", _change(ctx, payload, "activate"))


async def bulk_suspend(ctx: JobContext, payload: BulkChange) -> ChangeSummary:
    return await _whole_job(ctx, payload.bulk_job_id, "suspend", _change(ctx, payload, "suspend"))


async def bulk_export(ctx: JobContext, payload: BulkExport) -> ExportSummary:
    return await _whole_job(ctx, payload.bulk_job_id, "export", _export(ctx, payload))


async def _export(ctx: JobContext, payload: BulkExport) -> ExportSummary:
    await require_super_admin(ctx, payload.actor_id)
    destination = destination_for(ctx, f"{payload.bulk_job_id}-{payload.target}.{payload.format}.gz")
    progress = Progress(payload.bulk_job_id, "export", 0, time.time())
    telemetry = BulkTelemetry(ctx, progress)
    written = await write_export(
        ctx, payload.target, payload.format, payload.filter, destination, progress, telemetry
    )
    if progress.processed != progress.total:  # rows changed between count and read: report what was written
        progress.total = progress.processed
    await telemetry.publish("completed")
    ctx.log.info(
        "bulk export %s: %d %s rows, %d bytes to %s",
        payload.bulk_job_id,
        progress.processed,
        payload.target,
        written.size,
        destination.location,
    )
    summary: ExportSummary = {
        "bulkJobId": payload.bulk_job_id,
        "operation": "export",
        "target": payload.target,
        "format": payload.format,
        "rows": progress.processed,
        "bytes": written.size,
        "sha256": written.sha256,
    }
    if isinstance(destination, S3Upload):
        summary["url"] = destination.location
        summary["presignedUrl"] = destination.presigned_url
        summary["expiresAt"] = destination.expires_at
    else:
        summary["path"] = str(destination.final.resolve())
    return summary


HANDLERS: dict[str, Handler] = {
    "bulk.activate": bulk_activate,
    "bulk.suspend": bulk_suspend,
    "bulk.export": bulk_export,
}

IDEMPOTENCY_KEYS: IdempotencyKeys = {
    "bulk.activate": ("bulkJobId",),
    "bulk.suspend": ("bulkJobId",),
    "bulk.export": ("bulkJobId",),
}
