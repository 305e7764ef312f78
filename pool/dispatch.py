"""Job name -> handler, payloads validated at the edge, and the one place failures meet BullMQ.

PermanentError / bad payload / unknown name -> UnrecoverableError (failed now, no retry).
ThrottledError -> moveToDelayed + DelayedError (deferred, no attempt burned).
Anything else -> re-raised, so BullMQ retries it with the job's backoff, exponential backoffs capped (below).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bullmq import DelayedError, Job, UnrecoverableError
from pydantic import BaseModel, TypeAdapter, ValidationError

from handlers.context import Handler, JobContext, Resources
from handlers.errors import PermanentError, ThrottledError
from pool.logs import JobLines
from pool.queue_table import QueueSpec
from pool.telemetry import Telemetry
from pool.tracing import JobTracing
from pool.worker import UNDECODABLE

log = logging.getLogger("pool.dispatch")


@dataclass(frozen=True)
class Route:
    handler: Handler
    payload: TypeAdapter[Any]

    @classmethod
    def of(cls, handler: Handler) -> Route:
        params = list(inspect.signature(handler).parameters.values())
        if len(params) != 2:
            raise TypeError(f"handler {handler.__qualname__} must take (ctx, payload)")
        hints = inspect.get_annotations(handler, eval_str=True)
        model = hints.get(params[1].name, dict[str, Any])
        return cls(handler, TypeAdapter(model))


def describe_validation_error(error: ValidationError) -> str:
    """`organizationId: Field required; ids.3: Input should be a valid string` — fields first."""
    parts = []
    for item in error.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "payload"
        parts.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


class Dispatcher:
    """The processor handed to bullmq.Worker for one queue."""

    def __init__(
        self,
        spec: QueueSpec,
        resources: Resources,
        telemetry: Telemetry,
        tracing: JobTracing | None = None,
    ) -> None:
        self.spec = spec
        self.tracing = tracing
        self.resources = resources
        self.telemetry = telemetry
        self.routes = {name: Route.of(handler) for name, handler in spec.handlers.items()}
        self.job_log = logging.getLogger(f"jobs.{spec.name}")
        self.job_lines = JobLines(self.job_log)

    def _apply_queue_defaults(self, job: Job) -> None:
        # Node producers often leave attempts/backoff to the consumer: use the queue table's.
        if not job.opts.get("attempts"):
            job.opts["attempts"] = job.attempts = self.spec.attempts
            if not job.opts.get("backoff"):
                job.opts["backoff"] = {"type": "exponential", "delay": self.spec.backoff_ms}

    def _cap_backoff(self, job: Job, attempt: int) -> None:
        """BullMQ's exponential backoff has no cap (base 2 s reaches 68 min by the 12th try): for this attempt's
        retry, the job's exponential backoff becomes the fixed delay min(cap, base * 2^(attempt-1)) that
        `moveToFailed` then reads. In memory only: no script writes `opts` back, so Redis (and Node workers
        reading the job) keep the producer's options."""
        backoff = job.opts.get("backoff")
        if isinstance(backoff, Mapping) and backoff.get("type") == "exponential":
            delay = self.spec.retry_delay_ms(attempt, int(backoff.get("delay") or 0))
            job.opts["backoff"] = {"type": "fixed", "delay": delay}

    def _parse(self, job: Job) -> tuple[Route, Any]:
        route = self.routes.get(job.name)
        if route is None:
            known = ", ".join(sorted(self.routes)) or "none yet"
            raise PermanentError(
                f"unknown job name {job.name!r} on queue {self.spec.name} (handled: {known})"
            )
        if isinstance(job.data, dict) and UNDECODABLE in job.data:
            bad = job.data[UNDECODABLE]
            raise PermanentError(
                f"{', '.join(bad['fields'])}: not valid JSON (starts {bad['preview'][:40]!r}); "
                "a foreign producer? nothing was run"
            )
        try:
            return route, route.payload.validate_python(job.data)
        except ValidationError as error:
            raise PermanentError(
                f"invalid payload for {job.name}: {describe_validation_error(error)}"
            ) from None

    async def __call__(self, job: Job, token: str) -> Any:
        if self.tracing is None:
            return await self._dispatch(job, token)
        with self.tracing.job_span(self.spec.name, job):
            return await self._dispatch(job, token)

    async def _dispatch(self, job: Job, token: str) -> Any:
        self._apply_queue_defaults(job)
        attempt = job.attemptsMade + 1
        label = f"{self.spec.name} {job.name}#{job.id} try={attempt}"
        started = time.perf_counter()
        self.telemetry.job_started(job.id)
        try:
            route, payload = self._parse(job)
            ctx = JobContext(
                self.resources,
                self.spec.name,
                str(job.id),
                job.name,
                attempt,
                self.job_log,
                max_attempts=int(job.opts.get("attempts") or 1),
                progress=job.progress,
                save_progress=job.updateProgress,
            )
            result = await route.handler(ctx, payload)
        except ThrottledError as error:
            # Retry-After as asked, up to the backoff cap: no single wait of a job is longer (a throttle that
            # still holds then defers it again, still without burning an attempt).
            wait_s = min(error.retry_after, self.spec.backoff_cap_ms / 1000)
            await job.moveToDelayed(int(time.time() * 1000 + wait_s * 1000), token)
            self.telemetry.throttled(self.spec, job, str(error), wait_s)
            # No per-job line at INFO: a 429 storm would write one per deferred job. The telemetry logs the
            # window's first throttle (with this job and its retry-after) and then one line per queue and
            # window with the count; this line is for debugging only.
            self.job_log.debug(
                "%.2fs %s throttled, retry in %.1fs", time.perf_counter() - started, label, wait_s
            )
            raise DelayedError() from None
        except PermanentError as error:
            reason = str(error)
            self.job_log.warning("%.2fs %s failed: %s", time.perf_counter() - started, label, reason)
            self.telemetry.failed(self.spec, job, reason, final=True)
            raise UnrecoverableError(reason) from None
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            final = attempt >= int(job.opts.get("attempts") or 1)
            outcome = "failed" if final else "will retry"
            self.job_log.warning("%.2fs %s %s: %s", time.perf_counter() - started, label, outcome, reason)
            self.telemetry.failed(self.spec, job, reason, final=final)
            self._cap_backoff(job, attempt)
            raise
        finally:
            self.telemetry.job_finished(job.id)
        self.job_lines.info(f"{time.perf_counter() - started:.2f}s {label} ok")
        self.telemetry.completed()
        return result if result is None else _jsonable(result)


def _jsonable(result: Any) -> Any:
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json", by_alias=True)
    if isinstance(result, Mapping):
        return {k: _jsonable(v) for k, v in result.items()}
    return result
