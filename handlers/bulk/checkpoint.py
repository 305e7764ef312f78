"""`Progress`: how far a bulk job got, stored in the job's progress (BullMQ updateProgress) after every item.

The job's progress survives retries, throttling and stall recovery, so the next run resumes after the items
already done instead of starting over; an item that was in flight when a process died is simply run again
(with the same idempotency key, so identity does not apply it twice).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TypedDict

FAILURES_LISTED = 1_000
"""Failed items listed (with their reason) in the checkpoint and the result; the rest are only counted."""


class Failure(TypedDict):
    id: str
    reason: str


class Checkpoint(TypedDict):
    """The JSON stored in the job's progress (BullMQ shows it as the job's progress)."""

    bulkJobId: str
    operation: str
    total: int
    processed: int
    succeeded: int
    failed: int
    startedAt: float
    next: int
    doneAbove: list[int]
    failures: list[Failure]


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
    failures: list[Failure] = field(default_factory=list)

    @property
    def processed(self) -> int:
        return self.succeeded + self.failed

    def is_done(self, index: int) -> bool:
        return index < self.next or index in self.done_above

    def mark(self, index: int, failure: Failure | None) -> None:
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

    def sort_failures(self, items: list[str]) -> None:
        """List failures in the selection's order, whatever order the concurrent calls ended in."""
        if self.failures:
            order = {item: i for i, item in enumerate(items)}
            self.failures.sort(key=lambda f: order.get(f["id"], 0))

    def dump(self) -> Checkpoint:
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
    def resume(cls, saved: object, bulk_job_id: str, operation: str, total: int) -> Progress:
        """The saved checkpoint when it is this bulk job's over the same items, else a fresh start."""
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
