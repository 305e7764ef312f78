"""Activate or suspend each selected item through the identity admin API, a few at a time.

Every call carries an idempotency key per (bulk job, operation, target, item), so an item replayed after a
crash is not applied twice. The checkpoint (`Progress`) is saved after every item, so the next run skips
what is done.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Literal

from handlers.bulk.checkpoint import Failure, Progress
from handlers.bulk.failures import FailureEvents
from handlers.clients.identity import IdentityUnavailable, NotFound, TokenRefused
from handlers.context import JobContext
from handlers.errors import PermanentError, ThrottledError

if TYPE_CHECKING:
    from handlers.super_admin_bulk import BulkChange

Operation = Literal["activate", "suspend"]
ITEM_RETRIES = 3
"""Quick tries of one item while identity is unavailable, before the run stops."""


class Stop(Exception):
    """Stop launching items: identity throttled us or is unavailable."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


async def apply_one(ctx: JobContext, payload: BulkChange, operation: Operation, item_id: str) -> str | None:
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
            raise Stop(error) from None
        except (IdentityUnavailable, TokenRefused) as error:
            if attempt == ITEM_RETRIES - 1:
                raise Stop(error) from None
            await asyncio.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


async def apply_all(
    ctx: JobContext, payload: BulkChange, operation: Operation, items: list[str], progress: Progress
) -> list[Stop]:
    """Apply the items not done yet, in order, at most MA_BULK_ITEM_CONCURRENCY in flight (an item is in flight
    until its progress is saved), marking each in `progress` and saving it. Returns why the run stopped launching
    items (empty: every item was tried)."""
    slots = asyncio.Semaphore(ctx.settings.MA_BULK_ITEM_CONCURRENCY)
    checkpoint_lock = asyncio.Lock()
    stop: list[Stop] = []
    failure_events = FailureEvents(ctx, payload.bulk_job_id, operation)

    async def checkpoint() -> None:
        async with checkpoint_lock:
            if ctx.save_progress is not None:
                await ctx.save_progress(progress.dump())

    def record(index: int, item_id: str, reason: str | None) -> None:
        failure: Failure | None = None
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
        progress.mark(index, failure)
        if reason is not None:
            failure_events.failed(item_id, reason, progress.failed)

    async def run(index: int, item_id: str) -> None:
        # The slot is held until the item is saved, so a kill at any moment leaves at most
        # MA_BULK_ITEM_CONCURRENCY items applied but not saved: the only ones the rerun sends again.
        try:
            if stop:
                return
            try:
                reason = await apply_one(ctx, payload, operation, item_id)
            except Stop as error:
                stop.append(error)
                return
            record(index, item_id, reason)
            await checkpoint()
        finally:
            slots.release()

    sender = asyncio.create_task(failure_events.run())
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
        sender.cancel()
        await failure_events.close()
    return stop
