"""Redis failover through Sentinel, under a steady load: a primary, a replica and three sentinels (embedded
Valkey); a pool slot, `ma-top --once` and the CLI given a `redis+sentinel://` URL; a Node producer connected
through the sentinels adds jobs at a steady rate; the primary is SIGKILLed mid-run. Counted and printed: the time
from the kill to the first job completed on the new primary, acknowledged adds lost (replication is asynchronous:
an add the primary acknowledged and had not yet sent to the replica is gone), and jobs run twice (a completion the
new primary never saw)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.support import sentinel, top
from tests.support.paths import BIN, ROOT
from tests.support.processes import PoolProcess, pool_env
from tests.support.waits import wait_for

Q = "identity-events"


async def _master_port(group: sentinel.Group) -> int:
    client = Redis(port=group.sentinels[0].port, decode_responses=True, socket_timeout=2)
    try:
        _, port = await client.sentinel_get_master_addr_by_name(sentinel.MASTER)
        return int(port)
    finally:
        await client.aclose()


@pytest.mark.slow
async def test_a_primary_killed_under_load_fails_over_and_the_losses_are_counted(
    tmp_path: Path, db_urls: Any, node_bullmq: Path, tasks_db: Any
) -> None:
    with sentinel.group(tmp_path / "redis") as group:
        env = pool_env(group.url, db_urls, MA_HEARTBEAT_INTERVAL="1")
        pool = PoolProcess(Q, env, tmp_path / "pool.log")
        try:
            await wait_for(lambda: f"consuming {Q}" in pool.text(), what="pool up through the sentinels")
            snapshot = top.once(group.url, tmp_path)  # ma-top reads through the sentinels too
            assert not top.about(snapshot, "redis-down", "redis")
            cli = subprocess.run(
                [str(BIN / "ma-worker"), "enqueue", Q, "test.effect", "--data", '{"key": "via-cli"}'],
                capture_output=True,
                text=True,
                env=env,
                cwd=ROOT,
                timeout=60,
            )
            assert cli.returncode == 0, cli.stderr

            prefix = f"fo-{uuid.uuid4().hex[:8]}"
            producer = subprocess.Popen(
                ["node", "load_sentinel.mjs", group.hosts, sentinel.MASTER, Q, prefix, "600", "50"],
                cwd=node_bullmq,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )

            async def done() -> int:
                return int(
                    await tasks_db.fetchval(
                        "SELECT count(*) FROM test_effects WHERE key LIKE $1", f"{prefix}-%"
                    )
                )

            await wait_for(lambda: _at_least(done(), 150), timeout=60, what="a steady load before the kill")
            old = group.primary.port
            killed_at = time.time()
            group.kill_primary()
            await wait_for(
                lambda: _changed(_master_port(group), old), timeout=60, what="the sentinels promote"
            )
            out, err = await asyncio.to_thread(producer.communicate, timeout=180)
            assert producer.returncode == 0, err
            added = json.loads(out)
            acked: list[str] = added["acked"]

            # Drain: wait while jobs keep completing; stop when all are done or nothing moved for 15 s.
            last, still = -1, 0.0
            while (n := await done()) < len(acked) and still < 15:
                still = still + 0.5 if n == last else 0.0
                last = n
                await asyncio.sleep(0.5)
            rows = await tasks_db.fetch(
                "SELECT e.key, extract(epoch FROM e.at) AS at, (SELECT count(*) FROM test_attempts a WHERE a.key = e.key) AS n"
                " FROM test_effects e WHERE e.key LIKE $1",
                f"{prefix}-%",
            )
            effects = {r["key"]: r for r in rows}
            lost = sorted(set(acked) - set(effects))
            twice = sorted(k for k, r in effects.items() if r["n"] > 1)
            after = sorted(float(r["at"]) for r in rows if float(r["at"]) > killed_at)
            # Jobs in flight at the kill finish their effects at once (their completion is what fails), so the
            # pause is the longest gap between effects after the kill; processing resumed at its end.
            marks = [killed_at, *after]
            gap_end = max(range(1, len(marks)), key=lambda i: marks[i] - marks[i - 1], default=0)
            resume_s = marks[gap_end] - killed_at if after else float("inf")
            print(
                f"\nfailover: {len(acked)} adds acknowledged, {len(added['rejected'])} rejected; "
                f"resumed {resume_s:.1f}s after the kill; lost {len(lost)} {lost[:5]}; run twice {len(twice)}"
            )
            assert after, "no job completed after the failover"
            assert pool.proc.poll() is None, pool.text()
            # Every acknowledged add either ran or is counted lost (never replicated); none is stuck half-way.
            assert len(effects) + len(lost) == len(acked)
            assert "Traceback" not in pool.text()
        finally:
            pool.stop()


async def _at_least(count: Any, n: int) -> bool:
    return bool(await count >= n)


async def _changed(port: Any, old: int) -> bool:
    try:
        return bool(await port != old)
    except OSError:
        return False


@pytest.mark.slow  # a real failover: ~25 s
async def test_a_demoted_master_sends_the_pipelined_client_to_the_new_one_without_an_error(
    tmp_path: Path,
) -> None:
    """SENTINEL FAILOVER demotes a live primary (no kill): the pipelined client's writes then meet READONLY on
    its open connection; they are sent again to the new primary, and no caller sees an error. (How many of the
    writes acknowledged around the switch survive is the failover's business, not the client's: asynchronous
    replication, see docs/OPERATIONS.md.)"""
    from pool.connection import PipelinedRedis, pooled_redis

    with sentinel.group(tmp_path / "redis") as group:
        old = group.primary.port
        on_old = Redis(port=old, decode_responses=True, socket_timeout=5)
        on_replica = Redis(port=group.replica.port, decode_responses=True, socket_timeout=5)
        client = pooled_redis(group.url, max_connections=4, name="ma-test-fo", autopipeline=True)
        assert isinstance(client, PipelinedRedis)
        try:
            await wait_for(lambda: _role(on_replica, "slave", link="up"), what="the replica in sync")
            stop, sent = asyncio.Event(), 0

            async def writer() -> None:
                nonlocal sent
                while not stop.is_set():
                    await asyncio.gather(*(client.incr("fo:n") for _ in range(20)))
                    sent += 20
                    await asyncio.sleep(0.01)

            writing = asyncio.create_task(writer())
            await wait_for(lambda: _at_least_sync(sent, 200), what="writes before the failover")
            admin = Redis(port=group.sentinels[0].port, decode_responses=True, socket_timeout=5)
            try:
                assert await admin.execute_command("SENTINEL FAILOVER", sentinel.MASTER)
            finally:
                await admin.aclose()
            await wait_for(lambda: _role(on_old, "slave"), timeout=60, what="the old primary demoted")
            at_demotion = sent
            await wait_for(
                lambda: _at_least_sync(sent, at_demotion + 400), timeout=30, what="writes after it"
            )
            stop.set()
            await writing  # raises if any caller saw an error
            assert await _master_port(group) == group.replica.port
            before = int(await on_replica.get("fo:n"))
            await asyncio.gather(*(client.incr("fo:n") for _ in range(100)))
            assert int(await on_replica.get("fo:n")) == before + 100, "the client writes to the new primary"
            assert any(c["name"] == "ma-test-fo" for c in await on_replica.client_list())
            assert not any(c["name"] == "ma-test-fo" for c in await on_old.client_list()), (
                "the old one dropped"
            )
        finally:
            await client.aclose()
            await on_old.aclose()
            await on_replica.aclose()


async def _role(redis: Redis, role: str, link: str | None = None) -> bool:
    info = await redis.info("replication")
    return bool(info["role"] == role and (link is None or info.get("master_link_status") == link))


async def _at_least_sync(value: int, floor: int) -> bool:
    return value >= floor


async def test_a_write_meeting_readonly_on_a_demoted_master_goes_to_the_new_one(tmp_path: Path) -> None:
    """A switch the sentinels do not follow with CLIENT KILL (an operator's REPLICAOF, then the sentinels told
    the new master): the pipelined connection stays open to the demoted server and its write is answered
    READONLY; as redis-py's Sentinel connection does, that is a lost master: the write goes to the new one."""
    from pool.connection import PipelinedRedis, pooled_redis

    with sentinel.group(tmp_path / "redis") as group:
        on_old = Redis(port=group.primary.port, decode_responses=True, socket_timeout=5)
        on_new = Redis(port=group.replica.port, decode_responses=True, socket_timeout=5)
        client = pooled_redis(group.url, max_connections=4, name="ma-test-ro", autopipeline=True)
        assert isinstance(client, PipelinedRedis)
        try:
            await wait_for(lambda: _role(on_new, "slave", link="up"), what="the replica in sync")
            await client.set("ro:k", "before")
            await on_new.execute_command("REPLICAOF", "NO", "ONE")
            await on_old.execute_command("REPLICAOF", "127.0.0.1", str(group.replica.port))
            for s in group.sentinels:
                admin = Redis(port=s.port, decode_responses=True, socket_timeout=5)
                try:
                    await admin.execute_command("SENTINEL REMOVE", sentinel.MASTER)
                    await admin.execute_command(
                        "SENTINEL MONITOR", sentinel.MASTER, "127.0.0.1", str(group.replica.port), "2"
                    )
                finally:
                    await admin.aclose()
            assert any(c["name"] == "ma-test-ro" for c in await on_old.client_list()), "still connected there"
            assert await asyncio.gather(*(client.set(f"ro:{i}", i) for i in range(10))) == [True] * 10
            assert await on_new.get("ro:9") == "9", "written on the new master"
            assert not any(c["name"] == "ma-test-ro" for c in await on_old.client_list()), (
                "the old one dropped"
            )
        finally:
            await client.aclose()
            await on_old.aclose()
            await on_new.aclose()
