"""A bulk job's failed items on the event stream, aggregated: at most one event per second per bulk job.

Every failed item is logged (`Super admin bulk job operation failed: bulkJobId=... reason=...`, the runbook's
line), but one event per item would let one large job push everything else out of the capped `ma:events`
stream (and out of the process's telemetry buffer). So the items that failed within a second make one
`bulk-item-failed` event: how many (`count`), from when to when (`since`, `until`), a few of them with their
reasons (`sample`), and the job's failed items so far (`failedTotal`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from handlers.context import JobContext

EVERY_S = 1.0
SAMPLE = 3


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class FailureEvents:
    ctx: JobContext
    bulk_job_id: str
    operation: str
    every_s: float = EVERY_S
    _count: int = 0
    """Failed items not yet in an event."""
    _since: int = 0
    _until: int = 0
    _sample: list[dict[str, str]] = field(default_factory=list)
    _failed_total: int = 0
    _last_sent: float = float("-inf")

    def failed(self, item: str, reason: str, failed_total: int) -> None:
        """Count one failed item (`failed_total`: the job's failed items so far, this one included); send the
        pending ones at once if the last event is at least `every_s` old."""
        now = _now_ms()
        self._count += 1
        self._since = self._since or now
        self._until = now
        self._failed_total = failed_total
        if len(self._sample) < SAMPLE:
            self._sample.append({"id": item, "reason": reason})
        if time.monotonic() - self._last_sent >= self.every_s:
            self.flush()

    def flush(self) -> None:
        """Send what is pending as one event (nothing pending: nothing sent)."""
        if not self._count:
            return
        self.ctx.event(
            "bulk-item-failed",
            f"Super admin bulk job operation failed (bulk job {self.bulk_job_id}, {self.operation})",
            bulkJobId=self.bulk_job_id,
            operation=self.operation,
            count=str(self._count),
            since=str(self._since),
            until=str(self._until),
            sample=self._sample,
            failedTotal=str(self._failed_total),
        )
        self._count, self._since, self._until, self._sample = 0, 0, 0, []
        self._last_sent = time.monotonic()

    async def run(self) -> None:
        """Send pending failures about every `every_s` until cancelled (then the caller calls `close`)."""
        while True:
            wait = self.every_s - (time.monotonic() - self._last_sent)
            if wait > 0:
                await asyncio.sleep(wait)
            elif self._count:
                self.flush()
            else:
                await asyncio.sleep(self.every_s)  # a failure arriving meanwhile is sent at once by `failed`

    async def close(self) -> None:
        """Send the last pending failures, once `every_s` has passed since the last event (cancelled while
        waiting, e.g. at shutdown: sent at once)."""
        wait = self.every_s - (time.monotonic() - self._last_sent)
        try:
            if self._count and wait > 0:
                await asyncio.sleep(wait)
        finally:
            self.flush()
