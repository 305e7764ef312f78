"""Redis clients for bullmq and for our own keys.

redis-py 8 defaults `socket_timeout` to 5 s while bullmq blocks on BZPOPMIN for up to ~10 s, so the pooled
client has none; bullmq gives a Worker one shared connection by default, so its concurrency lanes queue behind
each other, hence a pool with a connection per lane.

`LeanBlockingConnectionPool` and `LeanRedis` bypass parts of redis-py's code on the per-command path (and
`HiredisPackConnection` replaces its packer). They were written against redis-py 8.1: `tests/test_overrides.py`
fingerprints the upstream methods they copy or bypass and fails, naming this file, when an upgrade changes them.
At run time the fast path is only taken when every internal it touches is there (fails closed: anything missing
or renamed turns it off, and redis-py's own path runs), and `MA_STOCK_CLIENTS=1` turns all three off.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import redis as redis_py
from pydantic_core import MultiHostUrl
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.exceptions import (
    BusyLoadingError,
    ConnectionError,
    DataError,
    ResponseError,
    TimeoutError,
)

from pool.autopipeline import AVAILABLE as AUTOPIPELINE_AVAILABLE
from pool.autopipeline import AutoPipeline, passes_through

try:
    import hiredis
except ImportError:  # pragma: no cover - a dependency (redis[hiredis]); the pure-Python packer still works
    hiredis = None  # type: ignore[assignment]

VERIFIED_REDIS = "8.1."
"""The redis-py line the fast path was written and fingerprinted against (`pyproject.toml` pins it)."""


def _has(obj: object, *names: str) -> bool:
    return all(hasattr(obj, name) for name in names)


def redis_internals_ok() -> bool:
    """Every redis-py internal the lean classes read, on the version they were checked against."""
    probe = BlockingConnectionPool(max_connections=1)
    return (
        redis_py.__version__.startswith(VERIFIED_REDIS)
        and _has(probe, "_available_connections", "_in_use_connections", "_lock", "_in_maintenance")
        and isinstance(probe._available_connections, list)
        and _has(ConnectionPool, "ensure_connection")
        and _has(Connection, "should_reconnect")
        and _has(Redis, "_send_command_parse_response", "_close_connection")
    )


FAST_PATH = redis_internals_ok()
"""False when redis-py is not the verified line or an internal is missing: the lean classes then behave
exactly as redis-py's own."""


class HiredisPackConnection(Connection):
    """redis-py's asyncio Connection packing commands with hiredis, as its sync Connection already does.

    Every job costs one EVALSHA of ~25 arguments (moveToFinished); packing them in Python was the pool's top cost
    per job after parsing (which hiredis already does). Same bytes on the wire as redis-py's sync
    `HiredisRespSerializer`; pipelines keep the parent's packer.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        if hiredis is None:
            return super().pack_command(*args)
        name = args[0]
        if " " in name if isinstance(name, str) else b" " in name:  # "CLIENT SETNAME": one argument per word
            args = (*name.split(), *args[1:])
        try:  # str, bytes, bytearray, int and float as they are: every argument of a job's EVALSHA
            return [hiredis.pack_command(args)]
        except TypeError:
            pass
        try:  # memoryview (redis-py accepts it), or a type redis-py refuses too (bool, None)
            return [
                hiredis.pack_command(
                    tuple(bytes(a) if isinstance(a, bytearray | memoryview) else a for a in args)  # type: ignore[arg-type]
                )
            ]
        except TypeError as error:
            raise DataError(str(error)) from None


class LeanBlockingConnectionPool(BlockingConnectionPool):
    """redis-py's BlockingConnectionPool with a fast path for the common case, kept inside the pool's own rules.

    Every command takes a connection from the pool and gives it back. redis-py does that under an asyncio
    Condition, a timeout timer, an async context manager and four observability hooks, for both halves: about as
    much CPU as the command's own packing, sending and parsing (profiled: the pool's largest per-job cost after the
    socket). Here, when an idle connection is there, nobody is waiting for one, no maintenance or re-auth is under
    way and the connection needs no reconnect, it is taken and returned directly (asyncio is single-threaded and
    nothing between the checks and the change awaits). Everything else (no idle connection, waiters, timeouts,
    reconnects, maintenance) takes redis-py's own path unchanged.

    Not done on the fast path (both are observability we do not enable; our exporter reports the pool's state):
    redis-py's connection wait-time metric (`record_connection_wait_time`) and OpenTelemetry connection-state
    counters on take, and the Condition's `notify()` on release (nobody waits when the fast path runs: a waiter
    counts in `_slow_waiters` and turns it off).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slow_waiters = 0
        self._fast = FAST_PATH and self.connection_kwargs.get("credential_provider") is None

    def _fast_ok(self) -> bool:
        return self._fast and not self._slow_waiters and not self._in_maintenance and not self._lock.locked()

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        if self._available_connections and self._fast_ok():
            connection = self._available_connections.pop()
            self._in_use_connections.add(connection)
            try:
                await self.ensure_connection(connection)
            except BaseException:
                await super().release(connection)
                raise
            return connection
        self._slow_waiters += 1
        try:
            return await super().get_connection()  # type: ignore[no-untyped-call]  # redis-py: unannotated
        finally:
            self._slow_waiters -= 1

    async def release(self, connection: Any) -> None:
        if connection in self._in_use_connections and self._fast_ok() and not connection.should_reconnect():
            self._in_use_connections.remove(connection)
            self._available_connections.append(connection)
            return
        await super().release(connection)


class LeanRedis(Redis):
    """redis-py's asyncio client without its per-command observability hooks on the pooled path.

    `execute_command` is redis-py's own (same connection handling, retry with reconnect through `call_with_retry`
    and `_close_connection`, same send and parse), minus the OpenTelemetry duration and error recording that we
    do not enable. Single-connection clients, clients bound to a connection, and a redis-py whose internals are
    not the verified ones (`FAST_PATH`) take the original path.
    """

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if not FAST_PATH or self.single_connection_client or self.connection is not None:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        pool = self.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        started = time.monotonic()

        def on_failure(error: BaseException, failure_count: int) -> Any:
            return self._close_connection(conn, error, failure_count, started, args[0])

        try:
            return await conn.retry.call_with_retry(
                lambda: self._send_command_parse_response(conn, args[0], *args, **options),  # type: ignore[no-untyped-call]
                on_failure,
                with_failure_count=True,
            )
        finally:
            await pool.release(conn)


async def _retried(error: BaseException) -> None:
    """Nothing to clean up before a retry: the failed connection was already dropped by its reader."""


class PipelinedRedis(LeanRedis):
    """The pooled client with auto-pipelining (`AutoPipeline`) for every command but `PASS_THROUGH` ones and
    those needing undecoded replies, which take a pooled connection as before."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.autopipeline = AutoPipeline(self.connection_pool)

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        name = args[0]
        if passes_through(name) or NEVER_DECODE in options or self.connection is not None:
            return await super().execute_command(*args, **options)
        if self.autopipeline._conn is None:  # as redis-py takes its connection: outside the command's retries
            await self.autopipeline.connect()
        retry: Retry = self.connection_pool.connection_kwargs["retry"]
        return await retry.call_with_retry(lambda: self._pipelined(name, args, options), _retried)

    async def _pipelined(self, name: Any, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        try:
            reply = await self.autopipeline.call(*args)
        except ResponseError:
            if EMPTY_RESPONSE in options:
                return options[EMPTY_RESPONSE]
            raise
        if name in self.response_callbacks:
            options.pop(EMPTY_RESPONSE, None)
            options.pop("keys", None)
            value = self.response_callbacks[name](reply, **options)
            return await value if inspect.isawaitable(value) else value
        return reply

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await self.autopipeline.aclose()
        await super().aclose(close_connection_pool)


def _eager(client: Redis, writes: int) -> Redis:
    if isinstance(client, PipelinedRedis):
        client.autopipeline.eager = writes
    return client


def pooled_redis(
    url: str,
    *,
    max_connections: int,
    name: str | None = None,
    stock: bool = False,
    autopipeline: bool = False,
    eager_writes: int = 0,
) -> Redis:
    """A pooled client (one connection per bullmq concurrency lane) without a read timeout.

    `eager_writes`: with auto-pipelining, commands are written at once while fewer than this many are in flight
    (`AutoPipeline.eager`; a worker passes half its lanes, and pool/contention.py turns them off while the
    host's CPUs are all taken).

    `stock=True` (`MA_STOCK_CLIENTS=1`): redis-py's own pool, client and connection classes, for when an
    upgrade is suspected. The client owns its pool (`from_pool`): `aclose()` disconnects every connection.
    """
    kwargs: dict[str, Any] = {
        "max_connections": max_connections,
        "timeout": 30,
        "decode_responses": True,
        "socket_timeout": None,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "client_name": name,
        "retry": Retry(ExponentialBackoff(cap=5, base=0.2), 5),
        "retry_on_error": [BusyLoadingError, ConnectionError, TimeoutError],
    }
    pipelined = autopipeline and not stock and FAST_PATH and hiredis is not None and AUTOPIPELINE_AVAILABLE
    if is_sentinel(url):
        client = sentinel_master(
            url, SentinelBlockingConnectionPool, redis_class=PipelinedRedis if pipelined else Redis, **kwargs
        )
        return _eager(client, eager_writes)
    if stock:
        return Redis.from_pool(BlockingConnectionPool.from_url(url, **kwargs))
    if url.startswith("redis://"):
        kwargs["connection_class"] = HiredisPackConnection
    pool = LeanBlockingConnectionPool.from_url(url, **kwargs)
    # RESP3 can push messages (invalidations, maintenance notices) between replies: those take the pooled path
    resp2 = str(pool.connection_kwargs.get("protocol") or 2) == "2"
    if pipelined and resp2 and url.startswith("redis://"):
        return _eager(PipelinedRedis.from_pool(pool), eager_writes)
    return LeanRedis.from_pool(pool)


def plain_redis(url: str, *, timeout: float = 5.0) -> Redis:
    """A short-timeout client for CLIs and monitoring (never used for blocking commands)."""
    if is_sentinel(url):
        return sentinel_master(
            url,
            SentinelConnectionPool,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
    return Redis.from_url(url, decode_responses=True, socket_timeout=timeout, socket_connect_timeout=timeout)


# -- Sentinel -----------------------------------------------------------------------------------------------------
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SENTINEL_TIMEOUT_S = 2.0
"""Each question to a sentinel (where is the master?): a dead sentinel costs this, then the next is asked."""


def is_sentinel(url: str) -> bool:
    return url.partition("://")[0] in SENTINEL_SCHEMES


class SentinelBlockingConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """redis-py's Sentinel pool (asks the sentinels for the master, drops connections to a demoted one) that
    waits for a free connection like the pooled client's pool instead of raising."""


def sentinel_master(
    url: str, pool_class: type[SentinelConnectionPool], redis_class: type[Redis] = Redis, **kwargs: Any
) -> Redis:
    """A client of the master named in `redis+sentinel://[user:pass@]host:port[,host:port...]/<master>[/db]`,
    found through the sentinels and followed across a failover (each new connection asks them again). The user
    and password are the master's (and the replicas'); the sentinels are asked without them."""
    parsed = MultiHostUrl(url)
    name, _, db = (parsed.path or "").strip("/").partition("/")
    if not name:
        raise ValueError("a redis+sentinel:// URL ends with the master's name: .../<master name>[/db]")
    hosts = parsed.hosts()
    auth = next((h for h in hosts if h.get("password") or h.get("username")), None)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py: unannotated
        [(h["host"] or "localhost", h["port"] or 26379) for h in hosts],
        sentinel_kwargs={"socket_timeout": SENTINEL_TIMEOUT_S, "socket_connect_timeout": SENTINEL_TIMEOUT_S},
    )
    if auth is not None:
        kwargs.update(username=auth.get("username"), password=auth.get("password"))
    if parsed.scheme == "rediss+sentinel":
        kwargs["ssl"] = True
    client: Redis = sentinel.master_for(
        name, redis_class=redis_class, connection_pool_class=pool_class, db=int(db or 0), **kwargs
    )
    return client
