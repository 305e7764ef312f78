"""What every handler receives: process-wide resources built once, plus this job's identity."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from handlers.errors import PermanentError

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from sqlalchemy.ext.asyncio import AsyncEngine
    from types_aiobotocore_s3 import S3Client

    from handlers.clients.identity import IdentityClient
    from handlers.clients.supabase import SupabaseAdmin
    from pool.settings import Settings


Handler = Callable[..., Awaitable[Any]]
"""`async def handle(ctx: JobContext, payload: SomeModel) -> result` (the dispatcher reads the payload model from
the annotation, so the exact signature varies per handler)."""
IdempotencyKeys = dict[str, tuple[str, ...]]
"""A handler module's `IDEMPOTENCY_KEYS`: job name -> the payload fields (as producers send them) that make its
side effect idempotent: the same values twice do the work once. Jobs not listed (sweeps, schedules) have no such
key."""


class EventSink(Protocol):
    def __call__(self, kind: str, message: str, **fields: Any) -> None: ...


@dataclass(frozen=True)
class Resources:
    """Built once per process at start; shared by every job of that process."""

    settings: Settings
    redis: Redis
    identity_db: AsyncEngine
    tasks_db: AsyncEngine
    event: EventSink
    """Record a worker event (ma-top's log across hosts): event(kind, message, **fields)."""
    identity: IdentityClient | None = None
    supabase: SupabaseAdmin | None = None
    stripe: Any = None
    """stripe.StripeClient (async calls only), when STRIPE_SECRET_KEY is set."""
    enqueue: Enqueue | None = None
    """Add a job to one of our queues with its queue-table options: enqueue(queue, name, data, **opts) -> added?"""
    s3: S3Client | None = None
    """The S3 client, when MA_EXPORT_URL names a bucket (bulk.export streams there)."""


class Enqueue(Protocol):
    def __call__(self, queue: str, name: str, data: dict[str, Any], **opts: Any) -> Awaitable[bool]: ...


@dataclass(frozen=True)
class JobContext:
    resources: Resources
    queue: str
    job_id: str
    job_name: str
    attempt: int
    log: logging.Logger
    max_attempts: int = 1
    progress: Any = None
    """The job's progress as stored when this run started: where a checkpointing handler resumes."""
    save_progress: Callable[[Any], Awaitable[Any]] | None = None
    """Store a checkpoint in the job's progress (BullMQ updateProgress); it survives retries and stalls."""

    @property
    def final_attempt(self) -> bool:
        return self.attempt >= self.max_attempts

    @property
    def settings(self) -> Settings:
        return self.resources.settings

    @property
    def redis(self) -> Redis:
        return self.resources.redis

    @property
    def identity_db(self) -> AsyncEngine:
        return self.resources.identity_db

    @property
    def tasks_db(self) -> AsyncEngine:
        return self.resources.tasks_db

    @property
    def identity(self) -> IdentityClient:
        assert self.resources.identity is not None, "the pool builds the identity client at start"
        return self.resources.identity

    @property
    def supabase(self) -> SupabaseAdmin:
        assert self.resources.supabase is not None, "the pool builds the Supabase client at start"
        return self.resources.supabase

    @property
    def stripe(self) -> Any:
        if self.resources.stripe is None:
            raise PermanentError("STRIPE_SECRET_KEY is not set: this worker cannot call Stripe")
        return self.resources.stripe

    @property
    def s3(self) -> S3Client:
        assert self.resources.s3 is not None, (
            "the pool builds the S3 client at start when MA_EXPORT_URL is set"
        )
        return self.resources.s3

    async def enqueue(self, queue: str, name: str, data: dict[str, Any], **opts: Any) -> bool:
        assert self.resources.enqueue is not None, "the pool builds the enqueuer at start"
        return await self.resources.enqueue(queue, name, data, **opts)

    def event(self, kind: str, message: str, **fields: Any) -> None:
        self.resources.event(kind, message, queue=self.queue, jobId=self.job_id, name=self.job_name, **fields)
