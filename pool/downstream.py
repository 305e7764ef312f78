"""Every request the pool's jobs make to a downstream (identity, Supabase, Stripe, PostgreSQL), counted by
outcome where the request is made, so no handler has to remember to: an httpx transport for the HTTP clients,
a Stripe HTTP client for Stripe (each network attempt, its own retries included), SQLAlchemy events for the
databases. Recording is a Counter increment; `DownstreamCounts.write` adds the counts to the telemetry's
flush pipeline.

Two records per outcome: the lifetime count (`ma:stats:downstream:<name>`, the exporter's counter) and the
count of the minute it happened in (`ma:downstream:<name>`), which the findings read as "in the last minutes".
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import event

from pool.contracts import (
    DOWNSTREAM_KEEP_MINUTES,
    DOWNSTREAM_OUTCOMES,
    DOWNSTREAM_TTL,
    downstream_field,
    downstream_key,
    downstream_scope,
    stats_key,
)

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline
    from sqlalchemy.engine import ExceptionContext
    from sqlalchemy.ext.asyncio import AsyncEngine


def http_outcome(status: int) -> str:
    if status == 429:
        return "429"
    if status >= 500:
        return "5xx"
    return "4xx" if status >= 400 else "ok"


class DownstreamCounts:
    """Requests per (downstream, outcome, epoch minute) not yet written to Redis."""

    def __init__(self, clock: Any = time.time) -> None:
        self.clock = clock
        self._counts: Counter[tuple[str, str, int]] = Counter()
        self._trimmed: dict[str, int] = {}
        """downstream -> the minute this process last trimmed its hash in."""

    def record(self, downstream: str, outcome: str) -> None:
        self._counts[(downstream, outcome, int(self.clock() // 60))] += 1

    def write(self, pipe: Pipeline) -> dict[tuple[str, str, int], int]:
        """Queue the counts on `pipe`; returns what was queued, for `written` once the pipeline succeeded.

        Trimming: the first write of a minute deletes the fields of the hour before the kept minutes. The key
        expires an hour after its last write, so no field older than that window outlives a quiet hour."""
        counts = dict(self._counts)
        touched = set()
        for (name, outcome, minute), n in counts.items():
            pipe.hincrby(stats_key(downstream_scope(name)), outcome, n)
            pipe.hincrby(downstream_key(name), downstream_field(outcome, minute), n)
            touched.add(name)
        minute = int(self.clock() // 60)
        for name in touched:
            pipe.expire(downstream_key(name), DOWNSTREAM_TTL)
            if self._trimmed.get(name) != minute:
                self._trimmed[name] = minute
                old = range(minute - DOWNSTREAM_TTL // 60 - 1, minute - DOWNSTREAM_KEEP_MINUTES + 1)
                pipe.hdel(
                    downstream_key(name), *(downstream_field(o, m) for m in old for o in DOWNSTREAM_OUTCOMES)
                )
        return counts

    def written(self, counts: dict[tuple[str, str, int], int]) -> None:
        self._counts.subtract(counts)
        self._counts = +self._counts  # drop the zeros


class CountingTransport(httpx.AsyncBaseTransport):
    """An httpx transport that records each request's outcome for one downstream."""

    def __init__(self, inner: httpx.AsyncBaseTransport, downstream: str, counts: DownstreamCounts) -> None:
        self.inner = inner
        self.downstream = downstream
        self.counts = counts

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self.inner.handle_async_request(request)
        except httpx.TimeoutException:
            self.counts.record(self.downstream, "timeout")
            raise
        except httpx.TransportError:
            self.counts.record(self.downstream, "connection-error")
            raise
        self.counts.record(self.downstream, http_outcome(response.status_code))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def http_client(downstream: str, counts: DownstreamCounts, *, max_connections: int) -> httpx.AsyncClient:
    """The httpx client of one downstream (its own pool, its requests counted)."""
    transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=max_connections))
    return httpx.AsyncClient(
        timeout=httpx.Timeout(10.0, connect=3.0),
        transport=CountingTransport(transport, downstream, counts),
    )


def stripe_http_client(counts: DownstreamCounts) -> Any:
    """stripe.HTTPXClient counting each attempt (Stripe's client retries 5xx and network errors itself, so one
    call can be several requests). Stripe is imported here, at start, not when this module is."""
    import stripe

    class CountingHTTPXClient(stripe.HTTPXClient):
        async def request_async(self, *args: Any, **kwargs: Any) -> Any:
            try:
                content, status, headers = await super().request_async(*args, **kwargs)
            except stripe.APIConnectionError as error:
                timed_out = isinstance(error.__cause__, httpx.TimeoutException)
                counts.record("stripe", "timeout" if timed_out else "connection-error")
                raise
            counts.record("stripe", http_outcome(status))
            return content, status, headers

    return CountingHTTPXClient()


PG_CONNECTION_CLASS = "08"
PG_TOO_MANY_CONNECTIONS = "53300"
"""max_connections reached: 'sorry, too many clients already' (or the slots left are reserved for superusers)."""
"""SQLSTATE class 08: connection exception. 57014 is a statement cancelled by statement_timeout; classes 53
(insufficient resources), 57 (operator intervention), 58 (system error) and XX (internal) are the server's."""
PG_SERVER_CLASSES = ("53", "57", "58", "XX")


def pg_outcome(error: BaseException, *, is_disconnect: bool) -> str:
    """A database error as a downstream outcome (asyncpg's exceptions carry `sqlstate`)."""
    sqlstate = str(getattr(error, "sqlstate", "") or "")
    if sqlstate == PG_TOO_MANY_CONNECTIONS:
        return "saturated"
    if sqlstate == "57014" or isinstance(error, TimeoutError):
        return "timeout"
    if is_disconnect or sqlstate.startswith(PG_CONNECTION_CLASS) or isinstance(error, OSError):
        return "connection-error"
    if sqlstate[:2] in PG_SERVER_CLASSES:
        return "5xx"
    return "error"


COUNTED = "_ma_downstream_counted"
"""Marks an error counted when connecting, so `handle_error` (which sees some of those too) does not count it
again."""


def watch_engine(engine: AsyncEngine, counts: DownstreamCounts, downstream: str = "postgres") -> None:
    """Count each statement of `engine` (ok) and each error by outcome, failures to connect included: those
    (a refused connection is a plain OSError from asyncpg) never reach `handle_error`, so the connect itself
    is wrapped (`do_connect` returning the dialect's own connection is SQLAlchemy's documented hook)."""

    def executed(*_: Any) -> None:
        counts.record(downstream, "ok")

    def failed(context: ExceptionContext) -> None:
        error = context.original_exception
        if not getattr(error, COUNTED, False):
            counts.record(downstream, pg_outcome(error, is_disconnect=context.is_disconnect))

    def connecting(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        try:
            return dialect.connect(*cargs, **cparams)
        except Exception as error:
            counts.record(downstream, pg_outcome(error, is_disconnect=False))
            setattr(error, COUNTED, True)
            raise

    event.listen(engine.sync_engine, "after_cursor_execute", executed)
    event.listen(engine.sync_engine, "handle_error", failed)
    event.listen(engine.sync_engine, "do_connect", connecting)
