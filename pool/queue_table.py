"""The whole system on one page: queue name -> handler table and the BullMQ options of its slots.

supervisord.conf has one program per entry here (a test keeps them in step).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from handlers import (
    billing_invoice,
    billing_payment_sync,
    billing_usage,
    identity_events,
    super_admin_bulk,
    task_notifications,
    user_management,
)
from handlers.context import Handler

HOUR = 3600
DAY = 24 * HOUR


@dataclass(frozen=True)
class Schedule:
    """A BullMQ job scheduler upserted (idempotently) by every slot of its queue at start."""

    id: str
    job_name: str
    every_ms: int
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QueueSpec:
    name: str
    handlers: Mapping[str, Handler]
    concurrency: int = 10
    processes: int = 1
    """Default supervisord numprocs; override with the env var `procs_env`."""
    lock_duration_ms: int = 30_000
    stalled_interval_ms: int = 30_000
    max_stalled_count: int = 1
    attempts: int = 14
    """Applied to jobs whose producer set no `attempts` (and to jobs we enqueue). Sized with the backoff so a
    downstream outage of 15 minutes is ridden out (`retry_window_s`; a test holds every queue to it)."""
    backoff_ms: int = 2_000
    """Base of the exponential backoff between attempts."""
    backoff_cap_ms: int = 120_000
    """No wait between two attempts is longer: the pool caps every exponential backoff it runs (BullMQ's has
    no cap), so a job tries again within this long of its downstream coming back."""
    limiter: Mapping[str, int] | None = None
    keep_completed: Mapping[str, int] = field(default_factory=lambda: {"age": DAY, "count": 1_000})
    keep_failed: Mapping[str, int] = field(default_factory=lambda: {"age": 14 * DAY, "count": 50_000})
    throttle_message: str = ""
    """The log line written (coalesced) when identity throttles this queue's jobs."""
    schedules: tuple[Schedule, ...] = ()
    long_running_s: float | None = None
    """An active job running longer is a finding (`long-running`); None: ma-top's MA_TOP_LONG_RUNNING_S."""
    idempotency_keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Job name -> the payload fields that make its side effect idempotent (the handler module's
    `IDEMPOTENCY_KEYS`): what ma-top's job detail shows as the job's idempotency key."""

    def idempotency_key(self, job_name: str, data: Any) -> str | None:
        """`invitationId=inv_1` for a job whose handler is idempotent per those payload fields; None otherwise."""
        fields = self.idempotency_keys.get(job_name, ())
        if not isinstance(data, Mapping):
            return None
        parts = [f"{f}={data[f]}" for f in fields if data.get(f) is not None]
        return " ".join(parts) or None

    def retry_delay_ms(self, attempt: int, base_ms: int | None = None) -> int:
        """The wait after failed attempt `attempt` (1-based): base * 2^(attempt-1), capped."""
        base = self.backoff_ms if base_ms is None else base_ms
        return int(min(self.backoff_cap_ms, base * 2 ** min(attempt - 1, 62)))

    @property
    def retry_window_s(self) -> float:
        """The time from a job's first failed attempt to its last attempt, spent waiting (attempt run times
        come on top): a downstream outage shorter than this is ridden out by a job that met its start."""
        return sum(self.retry_delay_ms(n) for n in range(1, self.attempts)) / 1000

    @property
    def longest_wait_s(self) -> float:
        """The longest wait between two attempts (the cap, unless the attempts run out first): once its
        downstream is back, a job that is still retrying runs again within this long."""
        return max((self.retry_delay_ms(n) for n in range(1, self.attempts)), default=0) / 1000

    @property
    def procs_env(self) -> str:
        return "MA_PROCS_" + re.sub(r"[^A-Z0-9]+", "_", self.name.upper())

    @property
    def drain_delay_s(self) -> int:
        # bullmq's stock Worker ignores the limiter's wake-up time (LIBRARY_TRAPS §2; PoolWorker does not): with
        # MA_STOCK_CLIENTS=1 a limited queue polls sooner.
        return 1 if self.limiter else 5

    @property
    def throttle_line(self) -> str:
        return self.throttle_message or f"{self.name} throttled"

    def worker_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "concurrency": self.concurrency,
            "lockDuration": self.lock_duration_ms,
            "stalledInterval": self.stalled_interval_ms,
            "maxStalledCount": self.max_stalled_count,
            "drainDelay": self.drain_delay_s,
            "runRetryDelay": 2_000,
            "removeOnComplete": dict(self.keep_completed),
            "removeOnFail": dict(self.keep_failed),
            "metrics": {"maxDataPoints": 7 * 24 * 60},  # one week of per-minute points
        }
        if self.limiter:
            opts["limiter"] = dict(self.limiter)
        return opts

    def job_options(self) -> dict[str, Any]:
        """Options for jobs we enqueue ourselves (CLI, schedulers, renewals)."""
        return {
            "attempts": self.attempts,
            "backoff": {"type": "exponential", "delay": self.backoff_ms},
            "removeOnComplete": dict(self.keep_completed),
            "removeOnFail": dict(self.keep_failed),
        }


QUEUES: dict[str, QueueSpec] = {
    spec.name: spec
    for spec in (
        QueueSpec(
            "identity-events",
            identity_events.HANDLERS,
            idempotency_keys=identity_events.IDEMPOTENCY_KEYS,
        ),
        QueueSpec(
            "user-management-jobs",
            user_management.HANDLERS,
            idempotency_keys=user_management.IDEMPOTENCY_KEYS,
            schedules=(Schedule("impersonation-cleanup", "impersonation.cleanup", DAY * 1000),),
        ),
        QueueSpec(
            "task-notifications",
            task_notifications.HANDLERS,
            idempotency_keys=task_notifications.IDEMPOTENCY_KEYS,
            concurrency=20,
            schedules=(Schedule("task-due-soon", "task.due-soon", 5 * 60 * 1000, {"windowMinutes": 60}),),
        ),
        QueueSpec(
            "super-admin.bulk-job",
            super_admin_bulk.HANDLERS,
            idempotency_keys=super_admin_bulk.IDEMPOTENCY_KEYS,
            concurrency=2,
            lock_duration_ms=60_000,
            attempts=12,  # 10+20+40+80 s, then 120 s x 7: 990 s
            backoff_ms=10_000,
            long_running_s=4 * 3600,  # a bulk job over 100k users runs for an hour or more
        ),
        QueueSpec(
            "billing-usage",
            billing_usage.HANDLERS,
            idempotency_keys=billing_usage.IDEMPOTENCY_KEYS,
            processes=2,
            limiter={"max": 50, "duration": 1_000},
            throttle_message="Billing usage aggregation throttled",
        ),
        QueueSpec(
            "billing-invoice",
            billing_invoice.HANDLERS,
            idempotency_keys=billing_invoice.IDEMPOTENCY_KEYS,
            concurrency=4,
            lock_duration_ms=60_000,
            throttle_message="Billing invoice creation throttled",
        ),
        QueueSpec(
            "billing-payment-sync",
            billing_payment_sync.HANDLERS,
            idempotency_keys=billing_payment_sync.IDEMPOTENCY_KEYS,
            attempts=13,  # 5+10+20+40+80 s, then 120 s x 7: 995 s
            backoff_ms=5_000,
            throttle_message="Billing payment sync throttled",
            schedules=(Schedule("payment-reconcile", "payment.reconcile", 15 * 60 * 1000),),
        ),
    )
}


def load_table(path: str) -> Mapping[str, QueueSpec]:
    """Resolve `module:attribute` to a queue table (the default is QUEUES above)."""
    module_name, _, attribute = path.partition(":")
    try:
        table: Mapping[str, QueueSpec] = getattr(importlib.import_module(module_name), attribute or "QUEUES")
    except (ImportError, AttributeError) as error:
        raise LookupError(f"MA_QUEUE_TABLE={path!r} cannot be loaded: {error}") from error
    return table
