"""Redis clients for bullmq and for our own keys (DESIGN 8.1 and 8.11)."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError


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
    )
    return Redis(connection_pool=pool)


def plain_redis(url: str, *, timeout: float = 5.0) -> Redis:
    """A short-timeout client for CLIs and monitoring (never used for blocking commands)."""
    return Redis.from_url(url, decode_responses=True, socket_timeout=timeout, socket_connect_timeout=timeout)
