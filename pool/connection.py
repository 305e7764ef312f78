"""Redis clients for bullmq and for our own keys (DESIGN 8.1 and 8.11)."""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, DataError, TimeoutError

try:
    import hiredis
except ImportError:  # pragma: no cover - a dependency (redis[hiredis]); the pure-Python packer still works
    hiredis = None


class HiredisPackConnection(Connection):
    """redis-py's asyncio Connection packing commands with hiredis, as its sync Connection already does.

    Every job costs one EVALSHA of ~25 arguments (moveToFinished); packing them in Python was the pool's top cost
    per job after parsing (which hiredis already does). Same bytes on the wire as redis-py's sync
    `HiredisRespSerializer`; pipelines keep the parent's packer.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        if hiredis is None:
            return super().pack_command(*args)
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(tuple(bytes(a) if isinstance(a, bytearray | memoryview) else a for a in args))]
        except TypeError as error:
            raise DataError(str(error)) from None


def pooled_redis(url: str, *, max_connections: int, name: str | None = None) -> Redis:
    """A pooled client: bullmq's concurrency lanes stop queueing behind one socket (DESIGN 8.11).

    socket_timeout=None: bullmq blocks on BZPOPMIN for up to ~10 s and a read timeout would
    silently stall delayed and rate-limited queues (DESIGN 8.1).
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=30,
        decode_responses=True,
        socket_timeout=None,
        socket_connect_timeout=5,
        socket_keepalive=True,
        health_check_interval=30,
        client_name=name,
        retry=Retry(ExponentialBackoff(cap=5, base=0.2), 5),
        retry_on_error=[BusyLoadingError, ConnectionError, TimeoutError],
        **({"connection_class": HiredisPackConnection} if url.startswith("redis://") else {}),
    )
    return Redis(connection_pool=pool)


def plain_redis(url: str, *, timeout: float = 5.0) -> Redis:
    """A short-timeout client for CLIs and monitoring (never used for blocking commands)."""
    return Redis.from_url(url, decode_responses=True, socket_timeout=timeout, socket_connect_timeout=timeout)
