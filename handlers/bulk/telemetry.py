"""`BulkTelemetry`: a bulk job's state for people watching it, live and after the fact.

While a job runs it publishes a `BulkMetrics` message on `BULK_METRICS_CHANNEL` about once a second, and a
final one when the run ends; each message is also kept in the hash `BULK_JOBS_KEY` (newest `BULK_JOBS_KEEP`),
because pub/sub alone loses what was sent before a dashboard subscribed. Not to be confused with
`pool.telemetry.Telemetry`, the pool's per-job counters and events.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from datetime import UTC, datetime
from typing import cast

from handlers.bulk.checkpoint import Progress
from handlers.context import JobContext
from pool.contracts import BULK_JOBS_KEEP, BULK_JOBS_KEY, BULK_METRICS_CHANNEL, BulkMetrics

TELEMETRY_EVERY_S = 1.0


class BulkMetricsMessage(BulkMetrics, total=False):
    """A `BulkMetrics` message as published: a run that stops early also says why."""

    retryAfter: float
    """Seconds identity asked us to wait (status `throttled`)."""
    error: str
    """What stopped the run (status `failed`, or `running` when another attempt follows)."""


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class BulkTelemetry:
    """Publishes the bulk job's state on the metrics channel and keeps the last one in `BULK_JOBS_KEY`."""

    def __init__(self, ctx: JobContext, progress: Progress) -> None:
        self.ctx = ctx
        self.progress = progress
        self.run_started = time.monotonic()
        self.processed_at_start = progress.processed
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._ticker: asyncio.Task[None] | None = None

    def message(
        self, status: str, *, retry_after: float | None = None, error: str | None = None
    ) -> BulkMetricsMessage:
        p = self.progress
        elapsed = max(time.monotonic() - self.run_started, 1e-6)
        message: BulkMetricsMessage = {
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
        }
        if retry_after is not None:
            message["retryAfter"] = retry_after
        if error is not None:
            message["error"] = error
        return message

    async def publish(
        self, status: str, *, retry_after: float | None = None, error: str | None = None
    ) -> None:
        raw = json.dumps(self.message(status, retry_after=retry_after, error=error), separators=(",", ":"))
        async with self.ctx.redis.pipeline(transaction=False) as pipe:
            pipe.hset(BULK_JOBS_KEY, self.progress.bulk_job_id, raw)
            pipe.publish(BULK_METRICS_CHANNEL, raw)
            pipe.hlen(BULK_JOBS_KEY)
            *_, size = await pipe.execute()
        if status != "running" and size > BULK_JOBS_KEEP:
            await self._trim()

    async def _trim(self) -> None:
        """Keep the newest BULK_JOBS_KEEP records (the dashboards show at most 50 of the last day)."""
        # The pool's Redis client decodes responses (pool/connection.py): keys and values are str.
        records = cast(dict[str, str], await self.ctx.redis.hgetall(BULK_JOBS_KEY))

        def updated(item: tuple[str, str]) -> str:
            try:
                return str(json.loads(item[1]).get("updatedAt", ""))
            except (ValueError, AttributeError):
                return ""

        stale = [key for key, _ in sorted(records.items(), key=updated)[: len(records) - BULK_JOBS_KEEP]]
        if stale:
            await self.ctx.redis.hdel(BULK_JOBS_KEY, *stale)

    async def start(self) -> None:
        """Publish the run's first `running` message, then one about every TELEMETRY_EVERY_S until `stop`."""
        await self.publish("running")
        self._ticker = asyncio.create_task(self._tick())

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TELEMETRY_EVERY_S)
            try:
                await self.publish("running")
            except Exception as error:  # noqa: BLE001 - telemetry must never stop the job
                self.ctx.log.warning("bulk telemetry publish failed: %s", type(error).__name__)
