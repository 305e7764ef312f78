"""The pooled client's fast path (pool/connection.py) keeps redis-py's pool rules: waiters, reconnects, cancels."""

from __future__ import annotations

import asyncio
from typing import Any

from pool.connection import LeanBlockingConnectionPool, LeanRedis, pooled_redis
from tests.support.waits import wait_for


async def blocked_at_server(redis: Any, name: str) -> bool:
    """Valkey holds a blocking command of the connection named `name` (CLIENT LIST flag b)."""
    return any(c["name"] == name and "b" in c["flags"] for c in await redis.client_list())


async def test_more_callers_than_connections_all_get_served_and_every_connection_comes_back(
    valkey: Any,
) -> None:
    client = pooled_redis(valkey.url, max_connections=3, name="ma-test-fast")
    pool = client.connection_pool
    assert isinstance(client, LeanRedis) and isinstance(pool, LeanBlockingConnectionPool)
    try:
        await client.delete("fast:n")
        await asyncio.gather(*(client.incr("fast:n") for _ in range(300)))
        assert int(await client.get("fast:n")) == 300
        assert not pool._in_use_connections and len(pool._available_connections) <= 3
    finally:
        await client.aclose()


async def test_callers_waiting_for_the_only_connection_are_woken_when_it_is_released(
    valkey: Any, redis: Any
) -> None:
    client = pooled_redis(valkey.url, max_connections=1, name="ma-test-waiters")
    try:
        await client.delete("fast:list")
        blocked = asyncio.create_task(client.blpop(["fast:list"], timeout=1))  # holds the one connection
        await wait_for(
            lambda: blocked_at_server(redis, "ma-test-waiters"),
            every=0.01,
            what="the BLPOP blocked at Valkey",
        )
        waiting = [asyncio.create_task(client.set(f"fast:w{i}", i)) for i in range(5)]
        assert await blocked is None
        assert await asyncio.wait_for(asyncio.gather(*waiting), timeout=5) == [True] * 5
        assert [await client.get(f"fast:w{i}") for i in range(5)] == ["0", "1", "2", "3", "4"]
    finally:
        await client.aclose()


async def test_a_connection_killed_by_the_server_is_replaced_without_an_error(
    valkey: Any, redis: Any
) -> None:
    client = pooled_redis(valkey.url, max_connections=2, name="ma-test-killed")
    try:
        await client.set("fast:k", "before")
        ours = [c["id"] for c in await redis.client_list() if c["name"] == "ma-test-killed"]
        assert ours, "the pooled connection names itself"
        for client_id in ours:
            assert await redis.client_kill_filter(_id=client_id) == 1
        assert await client.get("fast:k") == "before"  # reconnected (pool check or retry), no error raised
        now = [c["id"] for c in await redis.client_list() if c["name"] == "ma-test-killed"]
        assert now and not set(now) & set(ours)
    finally:
        await client.aclose()


async def test_a_cancelled_command_leaves_no_reply_for_the_next_caller(valkey: Any, redis: Any) -> None:
    client = pooled_redis(valkey.url, max_connections=1, name="ma-test-cancel")
    try:
        await client.delete("fast:q")
        await client.set("fast:x", "x-value")
        reader = asyncio.create_task(client.blpop(["fast:q"], timeout=5))
        await wait_for(
            lambda: blocked_at_server(redis, "ma-test-cancel"), every=0.01, what="the BLPOP blocked at Valkey"
        )
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await redis.rpush("fast:q", "item")  # a half-read BLPOP reply must not surface as the next answer
        assert await client.get("fast:x") == "x-value"
        assert await redis.lrange("fast:q", 0, -1) == ["item"]
    finally:
        await client.aclose()
