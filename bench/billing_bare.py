"""The bare reference of bench/billing_day.py: the same billing handlers called by plain asyncio tasks, no queue,
with the clients the pool builds (pool/runtime.py's builders and settings), and each downstream call timed where
it is made:

- PostgreSQL: each statement, from SQLAlchemy's `before_cursor_execute` to `after_cursor_execute` (both
  databases);
- identity: each HTTP request, in an httpx transport around the pool's own (`pool.downstream.http_client`'s);
- Stripe: each HTTP request, in Stripe's httpx client (one call can be several requests when Stripe retries);
- PDF: `render_pdf` in its thread (the handler runs it with `asyncio.to_thread`; the loop's default executor
  here times what it runs, by function name).

What is left of a job's time is the handler's own code, Redis (the renewal's add) and waiting for the loop: with
C jobs in flight, a call's time also holds the moments its answer waited for the loop to get back to it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from redis.asyncio import Redis
from sqlalchemy import event

from handlers.context import JobContext, Resources
from pool.dispatch import Route
from pool.downstream import CountingTransport, DownstreamCounts, watch_engine
from pool.queue_table import QUEUES, QueueSpec
from pool.runtime import Enqueuer, make_engine
from pool.settings import Settings

COMPONENTS = ("postgres", "identity", "stripe", "pdf")


@dataclass
class Clock:
    """Seconds and calls per component, since the last `reset`."""

    seconds: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)

    def add(self, component: str, seconds: float) -> None:
        self.seconds[component] += seconds
        self.calls[component] += 1

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


class TimedTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, component: str, clock: Clock) -> None:
        self.inner, self.component, self.clock = inner, component, clock

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        try:
            response = await self.inner.handle_async_request(request)
            await response.aread()  # the body is part of the call
            return response
        finally:
            self.clock.add(self.component, time.perf_counter() - started)

    async def aclose(self) -> None:
        await self.inner.aclose()


def time_engine(engine: Any, clock: Clock) -> None:
    def before(conn: Any, *_: Any) -> None:
        conn.info.setdefault("bench_started", []).append(time.perf_counter())

    def after(conn: Any, *_: Any) -> None:
        clock.add("postgres", time.perf_counter() - conn.info["bench_started"].pop())

    def failed(context: Any) -> None:
        started = context.connection.info.get("bench_started") if context.connection is not None else None
        if started:
            clock.add("postgres", time.perf_counter() - started.pop())

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    event.listen(engine.sync_engine, "after_cursor_execute", after)
    event.listen(engine.sync_engine, "handle_error", failed)


def timed_stripe(settings: Settings, clock: Clock) -> Any:
    """`pool.runtime.make_stripe`'s client, its HTTP requests timed."""
    import stripe

    class TimedHTTPXClient(stripe.HTTPXClient):
        async def request_async(self, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await super().request_async(*args, **kwargs)
            finally:
                clock.add("stripe", time.perf_counter() - started)

    assert settings.STRIPE_SECRET_KEY is not None and settings.STRIPE_API_BASE is not None
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY.get_secret_value(),
        base_addresses={"api": str(settings.STRIPE_API_BASE).rstrip("/")},
        http_client=TimedHTTPXClient(),
        max_network_retries=settings.MA_STRIPE_NETWORK_RETRIES,
    )


class TimedExecutor(ThreadPoolExecutor):
    """The loop's default executor (`asyncio.to_thread`): `render_pdf` timed in its thread."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(max_workers=8, thread_name_prefix="bare")
        self.clock = clock

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        # to_thread submits functools.partial(contextvars_context.run, func, *args)
        inner = fn.args[0] if isinstance(fn, functools.partial) and fn.args else fn
        if getattr(inner, "__name__", "") != "render_pdf":
            return super().submit(fn, *args, **kwargs)

        def timed() -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.clock.add("pdf", time.perf_counter() - started)

        return super().submit(timed)


@dataclass
class BareRun:
    wall_s: float
    busy_s: float
    """Sum over jobs of each job's own time (what the pool's processedOn -> finishedOn is)."""
    seconds: dict[str, float]
    calls: dict[str, int]
    results: list[Any]
    failed: list[str]


class Bare:
    """One process's worth of the pool's clients, shared by the stages (as a pool process shares them)."""

    def __init__(self, env: dict[str, str], *, log: logging.Logger) -> None:
        self.settings = Settings(**{k: v for k, v in env.items() if k in Settings.model_fields})  # type: ignore[arg-type]
        self.clock = Clock()
        self.log = log
        self.closers: list[Callable[[], Any]] = []

    async def __aenter__(self) -> Bare:
        from handlers.clients.identity import IdentityClient

        s = self.settings
        asyncio.get_running_loop().set_default_executor(TimedExecutor(self.clock))
        counts = DownstreamCounts()  # as the pool counts them (never written here)
        self.redis = Redis.from_url(str(s.REDIS_URL), decode_responses=True)
        engines = (make_engine(s.DATABASE_URL, read_only=True), make_engine(s.TASKS_DATABASE_URL))
        for engine in engines:
            watch_engine(engine, counts)
            time_engine(engine, self.clock)
        pooled = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=50))  # as http_client's
        identity_http = httpx.AsyncClient(
            timeout=httpx.Timeout(10.0, connect=3.0),
            transport=TimedTransport(CountingTransport(pooled, "identity", counts), "identity", self.clock),
        )
        stripe = timed_stripe(s, self.clock)
        self.resources = Resources(
            s,
            self.redis,
            engines[0],
            engines[1],
            lambda kind, message, **fields: None,
            identity=IdentityClient(str(s.IDENTITY_BASE_URL), s.SUPABASE_SERVICE_ROLE_KEY, identity_http),
            stripe=stripe,
            enqueue=Enqueuer(self.redis, QUEUES),
        )
        self.closers = [identity_http.aclose, self.redis.aclose, *(e.dispose for e in engines)]
        return self

    async def __aexit__(self, *_: object) -> None:
        for close in self.closers:
            await close()

    async def run(
        self, spec: QueueSpec, jobs: Iterable[tuple[str, str, dict[str, Any]]], lanes: int
    ) -> BareRun:
        """Each (job id, name, data) through its handler, `lanes` at a time, as one pool process would run them."""
        todo = iter(list(jobs))
        routes = {
            name: Route.of(handler) for name, handler in spec.handlers.items()
        }  # as the dispatcher, once
        results: list[Any] = []
        failed: list[str] = []
        busy = 0.0

        async def lane() -> None:
            nonlocal busy
            for job_id, name, data in todo:
                route = routes[name]
                ctx = JobContext(self.resources, spec.name, job_id, name, 1, self.log, spec.attempts)
                started = time.perf_counter()
                try:
                    results.append(await route.handler(ctx, route.payload.validate_python(data)))
                except Exception as error:  # noqa: BLE001 - reported, as the pool fails a job
                    failed.append(f"{job_id}: {type(error).__name__}: {error}")
                busy += time.perf_counter() - started

        self.clock.reset()
        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(lanes)))
        wall = time.perf_counter() - started
        return BareRun(wall, busy, dict(self.clock.seconds), dict(self.clock.calls), results, failed)
