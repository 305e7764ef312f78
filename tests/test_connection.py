"""The pooled client's fast path (pool/connection.py) keeps redis-py's pool rules: waiters, reconnects, cancels."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError, ResponseError

from pool.connection import (
    HiredisPackConnection,
    LeanBlockingConnectionPool,
    LeanRedis,
    PipelinedRedis,
    pooled_redis,
)
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
        blocked = asyncio.create_task(client.blpop(["fast:list"], timeout=3))  # holds the one connection
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


# -- auto-pipelining (PipelinedRedis / AutoPipeline) ---------------------------------------------------------------
def pipelined(url: str, name: str, connections: int = 4) -> Any:
    client = pooled_redis(url, max_connections=connections, name=name, autopipeline=True)
    assert isinstance(client, PipelinedRedis), "redis:// with hiredis and the verified redis-py pipelines"
    return client


async def named(redis: Any, name: str) -> list[dict[str, Any]]:
    return [c for c in await redis.client_list() if c["name"] == name]


async def test_pipelined_callers_each_get_their_own_reply_and_error_on_one_shared_connection(
    valkey: Any, redis: Any
) -> None:
    client = pipelined(valkey.url, "ma-test-mux")
    try:
        await redis.delete("mux:n", "mux:h", "mux:text")
        await redis.hset("mux:h", mapping={"a": "1", "b": "2"})
        await redis.set("mux:text", "not a number")
        calls = []
        for i in range(400):
            calls += [
                client.incr("mux:n"),
                client.set(f"mux:k{i}", i),
                client.get("mux:text"),
                client.hgetall("mux:h"),
            ]
            if i % 50 == 0:
                calls.append(client.incr("mux:text"))  # an error reply, for this caller only
        results = await asyncio.gather(*calls, return_exceptions=True)
        errors = [r for r in results if isinstance(r, Exception)]
        assert len(errors) == 8 and all(
            isinstance(e, ResponseError) and "not an integer" in str(e) for e in errors
        )
        assert sorted(r for r in results if isinstance(r, int) and not isinstance(r, bool)) == list(
            range(1, 401)
        )
        assert sum(r is True for r in results) == 400 and results.count("not a number") == 400
        assert results.count({"a": "1", "b": "2"}) == 400, (
            "the reply went through redis-py's callback (a dict)"
        )
        assert await client.mget([f"mux:k{i}" for i in range(0, 400, 100)]) == ["0", "100", "200", "300"]
        mine = await named(redis, "ma-test-mux")
        assert len(mine) == 1, f"1,608 commands from 1,608 callers took one connection, not {len(mine)}"
    finally:
        await client.aclose()
    await wait_for(lambda: _no_clients(redis, "ma-test-mux"), timeout=5, what="aclose closed it")


async def _no_clients(redis: Any, name: str) -> bool:
    return not await named(redis, name)


async def test_a_blocking_command_takes_its_own_connection_and_holds_nobody_up(
    valkey: Any, redis: Any
) -> None:
    client = pipelined(valkey.url, "ma-test-mux-block")
    try:
        await redis.delete("mux:q")
        blocked = asyncio.create_task(client.blpop(["mux:q"], timeout=10))  # ended by the RPUSH below
        await wait_for(
            lambda: blocked_at_server(redis, "ma-test-mux-block"), every=0.01, what="BLPOP blocked"
        )
        assert await asyncio.wait_for(asyncio.gather(*(client.incr("mux:b") for _ in range(50))), timeout=2)
        assert not blocked.done(), "the pipelined commands were answered while the BLPOP still waited"
        await redis.rpush("mux:q", "item")
        assert list(await blocked) == ["mux:q", "item"]
        assert len(await named(redis, "ma-test-mux-block")) == 2  # the pipelined one and the pooled one
    finally:
        await client.aclose()


@pytest.mark.parametrize("eager", [0, 2])
async def test_eager_writes_send_the_first_commands_of_a_turn_at_once_and_batch_the_rest(
    valkey: Any, redis: Any, eager: int
) -> None:
    """While fewer than `eager` commands are in flight, a command is written when it is made; the rest of the
    turn's go out together at its end. Seen from Valkey while this event loop is held (blocking sleep), so only
    what was written during the turn can have arrived."""
    client = pooled_redis(valkey.url, max_connections=4, autopipeline=True, eager_writes=eager)
    assert isinstance(client, PipelinedRedis)
    probe = SyncRedis.from_url(valkey.url, decode_responses=True)
    try:
        await client.ping()  # connected: the commands below run to their write without waiting
        for turn in range(2):  # in flight again once the first turn's replies are read
            calls = [asyncio.create_task(client.incr(f"mux:eager{turn}")) for _ in range(5)]
            # the five tasks run up to their replies, this one resumes in the same turn
            await asyncio.sleep(0)
            held_until = time.monotonic() + 5  # the loop held: the end-of-turn write cannot happen
            while int(probe.get(f"mux:eager{turn}") or 0) < eager and time.monotonic() < held_until:
                time.sleep(0.01)  # what was written during the turn reaches Valkey (a busy machine: slowly)
            time.sleep(0.2)  # and nothing more comes
            arrived = int(probe.get(f"mux:eager{turn}") or 0)
            assert arrived == eager, (
                f"turn {turn}: {arrived} of 5 reached Valkey during the turn, not {eager}"
            )
            assert sorted(await asyncio.gather(*calls)) == [1, 2, 3, 4, 5]
    finally:
        probe.close()
        await client.aclose()


async def test_a_cancelled_pipelined_caller_leaves_the_connection_and_the_others_replies_intact(
    valkey: Any, redis: Any
) -> None:
    client = pipelined(valkey.url, "ma-test-mux-cancel")
    try:
        await client.set("mux:c", "c-value")
        (before,) = await named(redis, "ma-test-mux-cancel")
        slow = asyncio.create_task(  # busy for ~300 ms at Valkey, so it is surely in flight when cancelled
            client.eval(
                "local t = redis.call('TIME') repeat local n = redis.call('TIME') "
                "until (n[1] - t[1]) * 1000000 + (n[2] - t[2]) > 300000 return 'slow'",
                0,
            )
        )
        behind = [asyncio.create_task(client.get("mux:c")) for _ in range(20)]
        await asyncio.sleep(0.05)
        slow.cancel()
        await asyncio.gather(slow, return_exceptions=True)
        assert await asyncio.gather(*behind) == ["c-value"] * 20, (
            "the replies behind it went to their callers"
        )
        assert await client.get("mux:c") == "c-value"
        (after,) = await named(redis, "ma-test-mux-cancel")
        assert after["id"] == before["id"], "no reconnect was needed"
    finally:
        await client.aclose()


async def test_a_pipelined_connection_killed_by_the_server_is_replaced_and_scripts_reload(
    valkey: Any, redis: Any
) -> None:
    client = pipelined(valkey.url, "ma-test-mux-killed")
    try:
        script = client.register_script("return redis.call('GET', KEYS[1])")
        await client.set("mux:s", "s-value")
        assert await script(keys=["mux:s"]) == "s-value"
        (killed,) = await named(redis, "ma-test-mux-killed")
        assert await redis.client_kill_filter(_id=killed["id"]) == 1
        await redis.script_flush()  # the reconnected client meets NOSCRIPT and loads the script again
        assert await asyncio.gather(*(script(keys=["mux:s"]) for _ in range(30))) == ["s-value"] * 30
        (now,) = await named(redis, "ma-test-mux-killed")
        assert now["id"] != killed["id"]
    finally:
        await client.aclose()


def test_hiredis_packing_sends_the_bytes_redis_py_would_and_refuses_what_it_refuses() -> None:
    """HiredisPackConnection.pack_command against redis-py's own Python packer, argument type by argument type."""
    ours, theirs = HiredisPackConnection(), Connection()
    commands = [
        ("EVALSHA", "a" * 40, 3, "bull:q:wait", b"bull:q:active", 1.5, -7, "ünïcode", b"\x00\xff"),
        ("CLIENT SETNAME", "ma-test"),
        (b"CLIENT SETNAME", b"ma-test"),
        ("SET", "k", bytearray(b"from a bytearray")),
        ("SET", "k", memoryview(b"from a memoryview")),
        ("SET", "k", ""),
    ]
    for command in commands:
        assert b"".join(ours.pack_command(*command)) == b"".join(theirs.pack_command(*command)), command
    for refused in (True, None):
        with pytest.raises(DataError):
            theirs.pack_command("SET", "k", refused)
        with pytest.raises(DataError):
            ours.pack_command("SET", "k", refused)


async def test_a_caller_cancelled_while_the_connection_opens_leaves_no_stale_connection_behind(
    valkey: Any, redis: Any
) -> None:
    """Replies keep to their callers after a connect whose every waiter was cancelled, then a lost connection."""
    client = pipelined(valkey.url, "ma-test-mux-opening")
    try:
        await redis.mset({"op:1": "v1", "op:2": "v2", "op:3": "v3"})
        first = asyncio.create_task(client.get("op:1"))
        await asyncio.sleep(0)  # it has started to open the shared connection
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await wait_for(
            lambda: _named_one(redis, "ma-test-mux-opening"), what="the connection opened all the same"
        )
        assert await client.get("op:1") == "v1"
        (conn,) = await named(redis, "ma-test-mux-opening")
        assert await redis.client_kill_filter(_id=conn["id"]) == 1
        await wait_for(lambda: _no_shared_connection(client), what="its reader saw the connection end")
        got = await asyncio.wait_for(asyncio.gather(*(client.get(f"op:{i}") for i in (1, 2, 3))), timeout=10)
        assert got == ["v1", "v2", "v3"]
    finally:
        await client.aclose()


async def _named_one(redis: Any, name: str) -> bool:
    return len(await named(redis, name)) == 1


async def _no_shared_connection(client: Any) -> bool:
    return client.autopipeline._conn is None


async def test_an_undecodable_reply_fails_its_own_caller_only(valkey: Any, redis: Any) -> None:
    """Invalid UTF-8 in one reply (a foreign producer's binary data): that caller gets the UnicodeDecodeError, as
    on redis-py's own path; the commands around it are answered on the same connection, each run once."""
    client = pipelined(valkey.url, "ma-test-mux-bytes")
    raw = Redis.from_url(valkey.url)  # bytes in, bytes out
    try:
        await raw.set("bin:v", b"\xff\xfe")
        await raw.delete("bin:n")
        await client.ping()
        (before,) = await named(redis, "ma-test-mux-bytes")
        calls = [client.incr("bin:n") for _ in range(5)] + [client.get("bin:v")]
        calls += [client.incr("bin:n") for _ in range(5)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(results[5], UnicodeDecodeError)
        assert results[:5] + results[6:] == list(range(1, 11))
        assert int(await client.get("bin:n")) == 10, "nothing was sent twice"
        (after,) = await named(redis, "ma-test-mux-bytes")
        assert after["id"] == before["id"], "the connection was kept"
    finally:
        await raw.aclose()
        await client.aclose()


async def test_commands_in_flight_when_the_connection_drops_are_sent_again_and_run_once(
    valkey: Any, redis: Any
) -> None:
    """Valkey holds the pipelined writes (CLIENT PAUSE WRITE) and the connection is killed under them: none ran,
    every caller's command is sent again on a new connection and runs exactly once."""
    client = pipelined(valkey.url, "ma-test-mux-inflight")
    try:
        await client.set("fl:n", 0)
        (conn,) = await named(redis, "ma-test-mux-inflight")
        await redis.execute_command("CLIENT PAUSE", 3000, "WRITE")
        try:
            writes = asyncio.gather(*(client.incr("fl:n") for _ in range(20)))
            await wait_for(lambda: _blocked(redis, conn["id"]), every=0.01, what="the writes held at Valkey")
            assert await redis.client_kill_filter(_id=conn["id"]) == 1
        finally:
            await redis.execute_command("CLIENT UNPAUSE")
        assert sorted(await asyncio.wait_for(writes, timeout=30)) == list(range(1, 21))
        assert int(await redis.get("fl:n")) == 20
    finally:
        await client.aclose()


async def _blocked(redis: Any, client_id: str) -> bool:
    return any(c["id"] == client_id and "b" in c["flags"] for c in await redis.client_list())


async def test_resp3_clients_and_odd_spellings_of_blocking_commands_take_the_pooled_path(valkey: Any) -> None:
    resp3 = pooled_redis(f"{valkey.url}?protocol=3", max_connections=2, autopipeline=True)
    assert isinstance(resp3, LeanRedis) and not isinstance(resp3, PipelinedRedis), "pushes would take replies"
    await resp3.aclose()
    client = pipelined(valkey.url, "ma-test-mux-spelling")
    try:
        await client.delete("sp:q")
        blocked = asyncio.create_task(client.execute_command("blpop", "sp:q", 10))  # ended by the RPUSH below
        await asyncio.sleep(0.2)
        assert await asyncio.wait_for(client.incr("sp:n"), timeout=2), "not stuck behind the lower-case BLPOP"
        assert not blocked.done()
        await client.rpush("sp:q", "x")
        assert list(await blocked) == ["sp:q", "x"]
    finally:
        await client.aclose()
