"""One pool process: one bullmq.Worker for one queue, with an explicit lifecycle.

start: settings -> Redis (retry with backoff until reachable) -> schedulers -> worker + telemetry.
SIGTERM/SIGINT: stop taking jobs, let in-flight ones finish up to MA_SHUTDOWN_GRACE, then
force-close (the unfinished ones are re-run by BullMQ's stall check), retire the heartbeat, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
import signal
import time
import warnings
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from bullmq import Queue, Worker
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from handlers.clients.identity import IdentityClient
from handlers.clients.supabase import SupabaseAdmin
from handlers.context import Resources
from pool import fastjson
from pool.connection import plain_redis, pooled_redis
from pool.contention import start_adapting
from pool.contracts import bull_key
from pool.dispatch import Dispatcher
from pool.downstream import DownstreamCounts, http_client, stripe_http_client, watch_engine
from pool.queue_table import QueueSpec, load_table
from pool.redis_full import is_oom
from pool.s3 import s3_client
from pool.settings import Settings
from pool.telemetry import Telemetry
from pool.tracing import setup as setup_tracing
from pool.worker import PoolWorker, drain_locks_on_close

log = logging.getLogger("pool.runtime")


def run_on_loop(main: Coroutine[Any, Any, int], kind: Literal["uvloop", "asyncio"]) -> int:
    """`asyncio.run(main)` on the loop MA_EVENT_LOOP names; uvloop, when asked for but not installed, is
    reported and replaced by the standard loop rather than refusing to start."""
    factory = None
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("MA_EVENT_LOOP=uvloop but uvloop is not installed: running on the asyncio loop")
        else:
            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def async_url(url: Any) -> str:
    """postgresql://... -> postgresql+asyncpg://... (settings keep the conventional scheme)."""
    text = str(url)
    scheme, _, rest = text.partition("://")
    return f"postgresql+asyncpg://{rest}" if scheme in ("postgres", "postgresql") else text


def make_engine(url: Any, *, read_only: bool = False) -> AsyncEngine:
    args = {"server_settings": {"default_transaction_read_only": "on"}} if read_only else {}
    return create_async_engine(
        async_url(url), pool_size=5, max_overflow=5, pool_pre_ping=True, connect_args=args
    )


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


async def wait_for_redis(redis: Redis) -> None:
    """Redis unreachable at start is an outage, not a crash: retry with backoff, log each failure."""
    failures = 0
    started = time.monotonic()
    while True:
        try:
            await asyncio.wait_for(redis.ping(), timeout=10)
        except (RedisError, OSError, TimeoutError) as error:
            failures += 1
            delay = min(30.0, 0.5 * 2 ** min(failures, 6))
            log.error(
                "Redis connection failed at start (attempt %d, next in %.0fs): %s",
                failures,
                delay,
                describe(error),
            )
            await asyncio.sleep(delay)
            continue
        if failures:
            log.warning("Redis connection recovered after %.1fs", time.monotonic() - started)
        return


async def check_redis_policy(redis: Redis, telemetry: Telemetry) -> None:
    """bullmq never warns about eviction (LIBRARY_TRAPS §7): jobs silently vanish under any other policy."""
    policy = (await redis.info("memory")).get("maxmemory_policy", "?")  # INFO works where CONFIG is disabled
    if policy != "noeviction":
        message = f"Redis maxmemory-policy is {policy!r}; BullMQ needs 'noeviction' or jobs can be lost"
        log.error(message)
        telemetry.event("redis-policy", message)


SCHEDULES_RETRY_S = 5.0


async def upsert_schedules(spec: QueueSpec, redis: Redis) -> None:
    if not spec.schedules:
        return
    queue = Queue(spec.name, {"connection": redis})
    for schedule in spec.schedules:
        await queue.upsertJobScheduler(
            schedule.id,
            {"every": schedule.every_ms},
            schedule.job_name,
            dict(schedule.data),
            spec.job_options(),
        )
        log.info(
            "scheduler %s: %s every %ds on %s",
            schedule.id,
            schedule.job_name,
            schedule.every_ms // 1000,
            spec.name,
        )


async def serve(spec: QueueSpec, settings: Settings) -> int:
    telemetry = Telemetry(
        spec.name,
        settings.process_name or f"{spec.name}(pid)",
        spec.concurrency,
        trail_every=settings.MA_RSS_TRAIL_INTERVAL,
    )
    tracing = setup_tracing(
        settings.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or settings.OTEL_EXPORTER_OTLP_ENDPOINT
    )
    redis_url = str(settings.REDIS_URL)
    eager = max(1, spec.concurrency // 2)  # Redis works on the first half while the rest run
    redis = pooled_redis(
        redis_url,
        max_connections=spec.concurrency + 6,
        stock=settings.MA_STOCK_CLIENTS,
        autopipeline=settings.MA_REDIS_AUTOPIPELINE,
        eager_writes=eager,
    )
    probe = plain_redis(redis_url)  # no retries: telemetry and health checks see an outage at once
    identity_db = make_engine(settings.DATABASE_URL, read_only=True)
    tasks_db = make_engine(settings.TASKS_DATABASE_URL)
    counts = telemetry.downstream  # every request to a downstream counted by outcome, where it is made
    for engine in (identity_db, tasks_db):
        watch_engine(engine, counts)
    if tracing is not None:
        tracing.instrument_engines([identity_db, tasks_db])
    identity_http = http_client("identity", counts, max_connections=spec.concurrency + 10)
    supabase_http = http_client("supabase", counts, max_connections=spec.concurrency + 10)
    identity_base = str(settings.IDENTITY_BASE_URL)
    closing = contextlib.AsyncExitStack()  # clients that close asynchronously
    s3_context = s3_client(settings)
    s3 = await closing.enter_async_context(s3_context) if s3_context is not None else None
    resources = Resources(
        settings,
        redis,
        identity_db,
        tasks_db,
        telemetry.event,
        identity=IdentityClient(identity_base, settings.SUPABASE_SERVICE_ROLE_KEY, identity_http),
        supabase=SupabaseAdmin(
            str(settings.SUPABASE_URL or identity_base), settings.SUPABASE_SERVICE_ROLE_KEY, supabase_http
        ),
        stripe=make_stripe(settings, counts),
        enqueue=Enqueuer(redis, load_table(settings.MA_QUEUE_TABLE)),
        s3=s3,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # bullmq installs none (LIBRARY_TRAPS §7)
        loop.add_signal_handler(sig, stop.set)

    waiting = asyncio.ensure_future(wait_for_redis(probe))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if stop.is_set():
        waiting.cancel()
        log.info("stopped before Redis was reachable")
        await _dispose(redis, probe, identity_db, tasks_db)
        await identity_http.aclose()
        await supabase_http.aclose()
        await closing.aclose()
        return 0
    await check_redis_policy(redis, telemetry)
    schedules = await _upsert_or_defer(spec, redis, telemetry)

    dispatcher = Dispatcher(spec, resources, telemetry, tracing)
    if not settings.MA_STOCK_CLIENTS:
        fastjson.install()  # msgspec decodes each job's fields (pool/fastjson.py)
    gc.collect()
    gc.freeze()  # what start-up built lives as long as the process: keep it out of every later full collection
    opts: dict[str, Any] = {**spec.worker_options(), "connection": redis, "name": telemetry.process_name}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bullmq's eviction warning; we check the policy ourselves
        worker = (Worker if settings.MA_STOCK_CLIENTS else PoolWorker)(spec.name, dispatcher, opts)
    drain_locks_on_close(worker)  # LIBRARY_TRAPS §13: locks renewed until the running jobs end
    worker.on("stalled", lambda job_id, *_: _on_stalled(telemetry, job_id))
    worker.on(
        "error", lambda error, *_: on_worker_error(telemetry, error, lambda job_id: _running(worker, job_id))
    )
    beats = asyncio.ensure_future(telemetry.run(probe, settings.MA_HEARTBEAT_INTERVAL))
    # eager writes while the host has a CPU to spare, every lane's while the process is lightly loaded
    adapting = start_adapting(redis, eager, light=spec.concurrency)
    log.info(
        "consuming %s: concurrency=%d handlers=%s loop=%s",
        spec.name,
        spec.concurrency,
        ",".join(sorted(spec.handlers)) or "-",
        "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio",
    )

    await stopping
    if schedules is not None:
        schedules.cancel()
    await _shutdown(worker, telemetry, settings.MA_SHUTDOWN_GRACE)
    beats.cancel()
    if adapting is not None:
        adapting.cancel()
    await telemetry.retire(probe)
    await _dispose(redis, probe, identity_db, tasks_db)
    await identity_http.aclose()
    await supabase_http.aclose()
    await closing.aclose()
    if tracing is not None:
        await asyncio.to_thread(tracing.shutdown)  # exports the spans still batched
    log.info(
        "stopped %s: processed=%d failed=%d throttled=%d",
        spec.name,
        telemetry.processed,
        telemetry.failed_count,
        telemetry.throttled_count,
    )
    return 0


def make_stripe(settings: Settings, counts: DownstreamCounts) -> Any:
    """The Stripe client: async calls over httpx (LIBRARY_TRAPS §4), network retries with Stripe's own backoff
    for 5xx/connection errors before the job's backoff takes over."""
    if settings.STRIPE_SECRET_KEY is None:
        return None
    import stripe

    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY.get_secret_value(),
        base_addresses={"api": str(settings.STRIPE_API_BASE).rstrip("/")}
        if settings.STRIPE_API_BASE
        else None,
        http_client=stripe_http_client(counts),
        max_network_retries=settings.MA_STRIPE_NETWORK_RETRIES,
    )


class Enqueuer:
    """Jobs our handlers add (renewals, reconciliation syncs) with their queue's options from the table."""

    def __init__(self, redis: Redis, table: Any) -> None:
        self.redis = redis
        self.table = table
        self.queues: dict[str, Queue] = {}

    async def __call__(self, queue: str, name: str, data: dict[str, Any], **opts: Any) -> bool:
        """Add; with a jobId, True only when no job with that id existed (a duplicate id adds nothing)."""
        spec = self.table[queue]
        q = self.queues.get(queue) or self.queues.setdefault(queue, Queue(queue, {"connection": self.redis}))
        job_id = opts.get("jobId")
        if job_id is not None and await self.redis.exists(bull_key(queue, job_id)):
            return False
        await q.add(name, data, {**spec.job_options(), **opts})
        return True


async def _upsert_or_defer(spec: QueueSpec, redis: Redis, telemetry: Telemetry) -> asyncio.Task[None] | None:
    """Upsert the queue's schedulers; when Redis is full (OOM), start anyway and retry in the background: a slot
    that exits at start on a full Redis would restart until supervisord gives up on it (FATAL)."""
    try:
        await upsert_schedules(spec, redis)
        return None
    except RedisError as error:
        if not is_oom(error):
            raise
        telemetry.full.refused_write("upserting the job schedulers, retried every 5s", error)

    async def retry() -> None:
        while True:
            await asyncio.sleep(SCHEDULES_RETRY_S)
            try:
                await upsert_schedules(spec, redis)
                return
            except (RedisError, OSError, TimeoutError) as error:
                if is_oom(error):
                    telemetry.full.refused_write("upserting the job schedulers", error)
                else:
                    log.warning("upserting the job schedulers failed, retrying: %s", error)

    return asyncio.ensure_future(retry())


def on_worker_error(
    telemetry: Telemetry, error: BaseException, running: Callable[[str], bool] = lambda job_id: True
) -> None:
    """A full Redis fails every fetch, completion and stalled check (bullmq retries a fetch every 0.1 s): those
    are coalesced with the slot's own refused writes; a lock that could not be renewed is said for what it
    means (`_on_lock_not_renewed`); any other error is logged as it comes."""
    if is_oom(error):
        telemetry.full.refused_write("fetching or finishing jobs", error)
    elif (lost := LOCK_NOT_RENEWED.fullmatch(str(error))) is not None:
        _on_lock_not_renewed(lost.group(1), running)
    else:
        log.error("worker error: %s", error)


LOCK_NOT_RENEWED = re.compile(r"could not renew lock for job (\S+)")
"""bullmq's LockManager error for each job its renewal script could not extend (bullmq/lock_manager.py)."""


def _on_lock_not_renewed(job_id: str, running: Callable[[str], bool]) -> None:
    """The LockManager renews a batch of the jobs it tracked a moment before the script runs: a job that finished
    meanwhile (its completion deleted the lock; after a Redis outage, dozens at once) is reported too, and nothing
    is wrong with it. Only a job this process still runs has lost its lock."""
    if not running(job_id):
        log.debug("lock of job %s not renewed: the job had finished meanwhile", job_id)
        return
    log.warning(
        "job %s lost its lock (not renewed in time: Redis unreachable, or this process too busy for the queue's "
        "lockDuration): its finish here will be refused, and the stall check puts it back to wait (or fails it "
        "once it has stalled too often)",
        job_id,
    )


def _running(worker: Worker, job_id: str) -> bool:
    return any(str(job.id) == job_id for job, _ in list(worker.jobs))


def _on_stalled(telemetry: Telemetry, job_id: str) -> None:
    telemetry.count("stalled")
    log.warning("job %s stalled (its worker died or blocked); moved back to wait", job_id)
    telemetry.event("stalled", f"job {job_id} stalled and was moved back to wait", jobId=str(job_id))


async def _shutdown(worker: Worker, telemetry: Telemetry, grace: float) -> None:
    """Graceful first; bullmq's close() waits forever for in-flight jobs (LIBRARY_TRAPS §5), so bound it."""
    in_flight = len(telemetry.in_flight)
    log.info("shutting down: %d job(s) in flight, grace %.0fs", in_flight, grace)
    closing = asyncio.ensure_future(worker.close())
    done, _ = await asyncio.wait({closing}, timeout=grace)
    if not done:
        left = sorted(telemetry.in_flight)
        log.warning(
            "grace of %.0fs expired with job(s) %s in flight; forcing close (they will be re-run)",
            grace,
            ",".join(left),
        )
        telemetry.event("forced-shutdown", f"forced close with {len(left)} job(s) in flight", jobIds=left)
        await asyncio.wait({asyncio.ensure_future(worker.close(force=True)), closing}, timeout=5)
        cancelled = [task for task in worker.processing if not task.done()]
        if cancelled:  # their clean-up (an export aborting its upload) needs the clients closed after this
            await asyncio.wait(cancelled, timeout=5)


async def _dispose(redis: Redis, probe: Redis, *engines: AsyncEngine) -> None:
    for engine in engines:
        await engine.dispose()
    for client in (redis, probe):
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(client.aclose(), timeout=2)
