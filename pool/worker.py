"""`PoolWorker`: bullmq's Worker with three small, documented changes (all upstream-ready).

1. Fetch the next job in the completing call, as Node BullMQ does. bullmq-python completes a job with
   `moveToFinished(fetchNext=False)` and then fetches the next with a second Lua call (`moveToActive`): two round
   trips per job where Node makes one. Here a lane that completes a job asks `moveToFinished` for the next one
   (same token, same lock duration and limiter, from the worker's options) and goes straight on with it; when
   the queue is empty the script says so and the lane returns to the worker's normal (blocking) fetch. Locks,
   stalled checks, events and metrics are those of the same Lua scripts, unchanged. Not while pausing/closing.

2. A job whose `data` (or `opts`/`progress`) is not JSON — a foreign producer's, or a hand-edited hash — makes
`Job.fromJSON` raise inside the worker's fetch loop, after the job was already moved to active under our lock.
The job is then never processed: it stalls, is moved back to wait, and after `maxStalledCount` fails with a
misleading "stalled" reason, while the worker logs an error per try.

Here such a job reaches the processor with its data replaced by a marker (`{UNDECODABLE: {"field", "preview"}}`;
the raw hash is left untouched for inspection), and the dispatcher fails it at once with a reason naming the
field. The happy path is unchanged (the marker is only built after `fromJSON` failed).

3. A rate-limited worker fetches again when the limiter's window ends, as Node BullMQ does, instead of after
   `drainDelay` (`PoolWorker.getNextJob`).

4. The completing call's arguments are built with what is fixed per worker computed once (pool/completion.py):
   the same script, keys and arguments as bullmq's `moveToCompleted`, for less CPU per job.

5. bullmq's Lua scripts are called with a plain `EVALSHA` (pool/lean_scripts.py), redis-py's script object
   stepping in only for NOSCRIPT and pipelines.

6. An idle worker's wait for the queue's marker and its fetch of the job go out together on the blocking
   connection: one round trip from a job's arrival to its start instead of two (pool/pickup.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from typing import Any

from bullmq import Job, Worker
from bullmq.custom_errors import DelayedError, UnrecoverableError, WaitingChildrenError
from bullmq.job import optsFromJSON
from bullmq.lock_manager import LockManager

from pool.completion import CompletionArgs
from pool.lean_scripts import lean_scripts
from pool.pickup import Pickup

UNDECODABLE = "__ma_undecodable__"
_DEFAULTS = {"data": "{}", "opts": "{}", "progress": "0"}


def _undecodable_fields(job_data: dict[str, Any]) -> dict[str, Any]:
    """A copy of the raw job hash with every non-JSON field replaced; the data carries the marker."""
    fixed, bad = dict(job_data), []
    for field, default in _DEFAULTS.items():
        value = fixed.get(field)
        if value is None:
            continue
        try:
            json.loads(value)
        except (ValueError, TypeError):
            bad.append(field)
            fixed[field] = default
    if bad:
        raw = job_data.get("data")
        preview = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        fixed["data"] = json.dumps({UNDECODABLE: {"fields": bad, "preview": preview[:120]}})
    return fixed


class DrainingLockManager(LockManager):  # type: ignore[misc]  # bullmq ships no type information
    """bullmq's `Worker.run` leaves its loop as soon as a graceful close begins and the blocking fetch ends, and
    closes its LockManager on the way out, while jobs are still running: their locks stop being renewed, so a job
    still running `lockDuration` after its last renewal loses its lock ("Missing lock for job N. moveToFinished")
    and the stall check of another slot runs it again. Closing waits for the tracked jobs instead (a forced close
    untracks them at once). Upstream-ready: the fix belongs in `Worker.run` (tests/test_overrides.py guards it)."""

    @classmethod
    def replacing(cls, manager: LockManager) -> DrainingLockManager:
        return cls(
            manager.worker,
            lock_renew_time=manager.lock_renew_time,
            lock_duration=manager.lock_duration,
            worker_id=manager.worker_id,
            worker_name=manager.worker_name,
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._no_jobs = asyncio.Event()
        self._no_jobs.set()

    def track_job(self, *args: Any, **kwargs: Any) -> Any:
        controller = super().track_job(*args, **kwargs)
        if self.tracked_jobs:
            self._no_jobs.clear()
        return controller

    def untrack_job(self, job_id: str) -> None:
        super().untrack_job(job_id)
        if not self.tracked_jobs:
            self._no_jobs.set()

    async def close(self) -> None:
        if not getattr(self.worker, "forceClosing", False):  # forced: the jobs are being cancelled anyway
            await self._no_jobs.wait()
        await super().close()


def drain_locks_on_close(worker: Worker) -> None:
    """Keep renewing the locks of a worker's running jobs until they finish during a graceful close (call it right
    after constructing the worker, before its run loop starts)."""
    worker.lockManager = DrainingLockManager.replacing(worker.lockManager)


class PoolWorker(Worker):  # type: ignore[misc]  # bullmq ships no type information
    waiting: asyncio.Future[Any] | None  # bullmq's blocking wait for the queue's marker (or our limiter wait)
    limitUntil: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        lean_scripts(self.scripts.commands)  # EVALSHA without redis-py's per-call overhead

    async def nextJobFromJobData(
        self,
        job_data: dict[str, Any] | None = None,
        job_id: str | None = None,
        limit_until: int = 0,
        delay_until: int = 0,
        token: str | None = None,
    ) -> Any:
        try:
            return await super().nextJobFromJobData(job_data, job_id, limit_until, delay_until, token)
        except (ValueError, TypeError):
            if not job_data:
                raise
            return await super().nextJobFromJobData(
                _undecodable_fields(job_data), job_id, limit_until, delay_until, token
            )

    async def getNextJob(self, token: str) -> Any:
        """bullmq's, except that a rate-limited worker waits out the limiter's window and then fetches, as Node
        BullMQ's `_getNextJob` does (`delay(limitUntil)`). bullmq-python blocks on the queue's marker instead,
        which a limited queue does not set, so each window cost a whole `drainDelay`: a queue limited to 50 jobs/s
        ran at 75-80 % of it (LIBRARY_TRAPS §2). The wait is held in `waiting`, as bullmq's blocking wait is: the
        run loop starts no other fetch meanwhile, and pause() and close() cancel it."""
        limit_ms = self.limitUntil
        if not limit_ms and not self.waiting and self.drained and not self.closing and not self.paused:
            return await self._wait_and_fetch(token)
        if not limit_ms or self.waiting or self.closing or self.paused:
            return await super().getNextJob(token)
        ended, _ = await self._held_wait(asyncio.ensure_future(asyncio.sleep(limit_ms / 1000)))
        if not ended:
            return None
        job = await self.moveToActive(token)
        if job:
            self.emit("active", job, "waiting")
        return job

    async def _wait_and_fetch(self, token: str) -> Job | None:
        """bullmq's blocking fetch (`getNextJob` when drained), its wait and fetch in one round trip
        (pool/pickup.py). The wait is held in `waiting` as bullmq's is. A graceful close ends it at once; a job
        its fetch still got is processed here, in this task, which the close waits for: bullmq's run loop stops
        taking jobs as soon as any lane ends while closing, so a job handed back to it could be left active."""
        await self._ensure_client_names()
        ended, got = await self._held_wait(asyncio.ensure_future(self._pickup.wait_and_fetch(token)))
        if not ended:
            return None
        self.blockUntil, (job_data, job_id, limit_until, delay_until) = got
        job: Job | None = await self.nextJobFromJobData(job_data, job_id, limit_until, delay_until, token)
        if job:
            self.emit("active", job, "waiting")
            if self.closing:
                await self.processJob(job, token)
                return None
        return job

    async def _held_wait(self, wait: asyncio.Future[Any]) -> tuple[bool, Any]:
        """Await `wait` held in `waiting`, as bullmq holds its blocking wait: the run loop starts no other fetch
        meanwhile, and pause() and close() cancel it. (True, its result), or (False, None) when they did."""
        self.waiting = wait
        try:
            return True, await wait
        except asyncio.CancelledError:
            if not self.paused and not self.closing:
                raise
            return False, None
        finally:
            self.waiting = None

    @functools.cached_property
    def _pickup(self) -> Pickup:
        return Pickup(self)

    @functools.cached_property
    def _completion_args(self) -> CompletionArgs:
        return CompletionArgs(self.scripts)

    async def processJob(self, job: Job, token: str) -> None:
        """One lane: process `job`, then the jobs its completion fetched, until the queue has none ready."""
        while job is not None:
            job = await self._process_one(job, token)

    async def _process_one(self, job: Job, token: str) -> Job | None:
        """bullmq's Worker.processJob (3.4.x), except that completing fetches the next job (see the module doc)."""
        next_job: Job | None = None
        fetch, raw = False, None
        try:
            if "removeOnComplete" not in job.opts and "removeOnComplete" in self.opts:
                job.opts["removeOnComplete"] = self.opts["removeOnComplete"]
            if "removeOnFail" not in job.opts and "removeOnFail" in self.opts:
                job.opts["removeOnFail"] = self.opts["removeOnFail"]
            self.jobs.add((job, token))
            controller = self.lockManager.track_job(
                job.id, token, int(time.time() * 1000), should_create_controller=self._processor_wants_signal
            )
            if job.deferredFailure:
                await job.moveToFailed(UnrecoverableError(job.deferredFailure), token)
                self.emit("failed", job, UnrecoverableError(job.deferredFailure))
                return None
            if controller is not None:
                result = await self.processor(job, token, controller.signal)
            else:
                result = await self.processor(job, token)
            if not self.forceClosing:
                fetch = not (self.closing or self.paused)
                keys, args = self._completion_args(
                    job, result, job.opts.get("removeOnComplete", False), token, fetch
                )
                raw = await self.scripts.moveToFinished(job.id, keys, args)
                job.returnvalue = result
                job.attemptsMade = job.attemptsMade + 1
            self.emit("completed", job, result)
        except (DelayedError, WaitingChildrenError):
            return None
        except Exception as err:  # noqa: BLE001 - as bullmq: any processor error fails the job
            try:
                if not self.forceClosing:
                    await job.moveToFailed(err, token)
                self.emit("failed", job, err)
            except Exception as error:  # noqa: BLE001 - as bullmq: reported, the lane goes on
                self.emit("error", error, job)
        finally:
            self.jobs.discard((job, token))
            self.lockManager.untrack_job(job.id)
        if fetch and raw:
            next_job = await self._next_from_completion(raw, token)
        if next_job is not None:
            self.emit("active", next_job, "waiting")
        return next_job

    async def _next_from_completion(self, raw: list[Any], token: str) -> Job | None:
        """The job `moveToFinished` fetched along with the completion, ready for this lane.

        Outside the completion's `try`: the completed job is done whatever happens here. Should building the
        fetched job fail (the non-JSON case is handled in `nextJobFromJobData`; this is anything else), that job
        is already active under our lock: it fails now with the reason, instead of waiting for the stall check
        and failing later as "stalled".
        """
        job_data, job_id, limit_until, delay_until = raw
        try:
            job: Job | None = await self.nextJobFromJobData(
                job_data, job_id, limit_until or 0, delay_until or 0, token
            )
            return job
        except Exception as error:  # noqa: BLE001 - reported on the worker, the job fails with the reason
            self.emit("error", error, None)
            unreadable = self._salvaged(job_data, job_id)
            try:
                await unreadable.moveToFailed(
                    UnrecoverableError(f"could not read the job fetched after a completion: {error!r}"), token
                )
            except Exception as failure:  # noqa: BLE001 - Redis gone too: the stall check recovers the job
                self.emit("error", failure, None)
            return None

    def _salvaged(self, job_data: Any, job_id: str) -> Job:
        """As much of an unreadable job as can be read, to fail it as its producer asked: its options
        (`removeOnFail`, its flow parent, whose dependency must learn of the failure) when they parse, else the
        worker's defaults; its attempts so far. The data is left out: it is what could not be read."""
        raw = job_data if isinstance(job_data, dict) else {}

        def text(field: str) -> str:
            value = raw.get(field, "")
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)

        try:
            opts: dict[str, Any] = optsFromJSON(json.loads(text("opts") or "{}"))
        except (ValueError, TypeError, AttributeError):
            opts = {}
        if "removeOnFail" not in opts and "removeOnFail" in self.opts:
            opts["removeOnFail"] = self.opts["removeOnFail"]
        job = Job(self, text("name"), {}, opts, job_id)
        if (parent_key := text("parentKey")) and not job.parentKey:
            job.parentKey = parent_key
        with contextlib.suppress(ValueError):
            job.attemptsMade = int(text("attemptsMade") or text("atm") or "0")
        return job
