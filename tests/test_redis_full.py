"""Redis full (maxmemory reached under noeviction, every write answered with OOM), on a Valkey of its own with a
pool slot running: the slot keeps running and says so once (not once per refused write), producers' adds fail
visibly, ma-top and the exporter say "Redis is full: writes refused (OOM)" while it is true and clear when memory
is freed, and every job queued before the fill completes exactly once after it, without anyone's help."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError

from devstack import engines
from tests.support import top
from tests.support.exporter import value
from tests.support.node import node_add
from tests.support.paths import BIN, ROOT
from tests.support.processes import PoolProcess, pool_env
from tests.support.waits import wait_for

FULL = "Redis is full: writes refused (OOM)"


async def _fill(redis: Redis) -> list[str]:
    """Fill Redis: 2 MiB of ballast, then maxmemory 1 MiB under what is used. (Filling up to the limit leaves a
    margin that small writes then take, and clients' buffers, freed when they disconnect, move used_memory by
    tens of KiB: jobs would run in those moments.) The ballast's keys."""
    keys = [f"ballast:{i}" for i in range(16)]
    for key in keys:
        await redis.set(key, "x" * 2**17)
    used = int((await redis.info("memory"))["used_memory"])
    await redis.config_set("maxmemory", used - 2**20)
    with pytest.raises(OutOfMemoryError):
        await redis.set("one-more", "x")
    return keys


async def _none(count: Any) -> bool:
    return bool(await count == 0)


def _full_found(url: str, cwd: Path) -> list[dict[str, str]]:
    return top.about(top.once(url, cwd), "redis-full", "redis")


@pytest.mark.slow  # a staged incident on its own Valkey (about 30 s): CI runs it in its own step
async def test_a_full_redis_refuses_adds_keeps_the_slot_and_resumes_when_freed(
    tmp_path: Path, db_urls: Any, node_bullmq: Path, tasks_db: Any, exporter: Any
) -> None:
    valkey = engines.valkey(tmp_path / "valkey-data", persistent=False).start()
    redis = Redis.from_url(valkey.url, decode_responses=True)
    env = pool_env(valkey.url, db_urls, MA_HEARTBEAT_INTERVAL="1")
    pool = PoolProcess("identity-events", env, tmp_path / "pool.log")
    run = uuid.uuid4().hex[:8]
    keys = [f"full-{run}-{i}" for i in range(20)]
    queued = [f"full-{run}-q{i}" for i in range(20)]
    late: PoolProcess | None = None
    try:
        metrics = exporter(valkey.url)

        def exported() -> float | None:
            return value(
                metrics.scrape(), "ma_finding", kind="redis-full", subject="redis", severity="critical"
            )

        await wait_for(lambda: "consuming identity-events" in pool.text(), what="pool up")
        # Due in 3 s, when Redis is already full: they wait, queued, through the whole episode.
        jobs = [{"name": "test.effect", "data": {"key": k}, "opts": {"delay": 3000}} for k in keys]
        node_add(node_bullmq, valkey.url, "identity-events", jobs)
        # Waiting on a queue whose slot starts once Redis is full: they must stay queued until it has room.
        waiting = [{"name": "test.effect", "data": {"key": k}} for k in queued]
        node_add(node_bullmq, valkey.url, "task-notifications", waiting)
        ballast = await _fill(redis)

        with pytest.raises(subprocess.CalledProcessError) as refused:
            node_add(
                node_bullmq, valkey.url, "identity-events", [{"name": "test.effect", "data": {"key": "no"}}]
            )
        assert "OOM" in refused.value.stderr
        cli = subprocess.run(
            [str(BIN / "ma-worker"), "enqueue", "identity-events", "test.effect", "--data", '{"key": "no"}'],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
        )
        assert cli.returncode != 0
        assert "Redis is full (OOM): the job was not added" in cli.stderr

        found = await wait_for(lambda: _full_found(valkey.url, tmp_path), what="ma-top --once: Redis is full")
        assert found[0]["severity"] == "critical" and FULL in found[0]["cause"]
        assert FULL in top.once(valkey.url, tmp_path, as_json=False)
        await wait_for(lambda: exported() == 1, what="the exporter's ma_finding for a full Redis")
        await wait_for(lambda: FULL in pool.text(), what="the slot reports the refused writes")
        late = PoolProcess("task-notifications", env, tmp_path / "late.log")
        await wait_for(
            lambda: "consuming task-notifications" in late.text(), what="a slot starts on a full Redis"
        )
        await wait_for(lambda: FULL in late.text(), what="its writes refused, said once")
        assert not await tasks_db.fetchval(
            "SELECT count(*) FROM test_attempts WHERE key LIKE $1", f"full-{run}-q%"
        )
        assert await redis.llen("bull:task-notifications:wait") == len(queued)
        # The jobs come due while Redis is full. Redis refuses a Lua script's write only when it is the script's
        # first write that may grow memory (it cannot stop a script half-way), so some of bullmq's scripts get
        # through and others fail: some jobs run, others stay queued. What counts: each completes exactly once.
        await wait_for(lambda: _none(redis.zcard("bull:identity-events:delayed")), what="the jobs came due")
        counts = {s: await redis.llen(f"bull:identity-events:{s}") for s in ("wait", "active")}
        done = await tasks_db.fetchval("SELECT count(*) FROM test_effects WHERE key LIKE $1", f"full-{run}-%")
        print(f"while full: {counts}, {done} of {len(keys)} jobs' effects done")
        assert _full_found(valkey.url, tmp_path)
        assert pool.proc.poll() is None, pool.text()

        await redis.delete(*ballast)  # DEL is allowed when full: memory freed, nobody restarts anything

        async def all_done() -> bool:
            n = await tasks_db.fetchval(
                "SELECT count(*) FROM test_effects WHERE key LIKE $1", f"full-{run}-%"
            )
            return bool(n == len(keys) + len(queued))

        await wait_for(all_done, timeout=60, what="every queued job completes after memory is freed")
        attempts = await tasks_db.fetch(
            "SELECT key, count(*) AS n FROM test_attempts WHERE key LIKE $1 GROUP BY key", f"full-{run}-%"
        )
        assert {r["key"]: r["n"] for r in attempts} == dict.fromkeys(keys + queued, 1)  # exactly once each
        await wait_for(lambda: not _full_found(valkey.url, tmp_path), what="ma-top --once clears")
        await wait_for(lambda: not exported(), what="the exporter clears")

        async def event() -> list[dict[str, str]]:
            return [f for _, f in await redis.xrange("ma:events") if f.get("kind") == "redis-full"]

        written = await wait_for(event, what="the episode on ma:events once writes are accepted")
        assert "refused writes (OOM)" in written[0]["message"]
        for slot in (pool, late):
            text = slot.text()
            assert "Redis accepted writes again" in text
            assert "Traceback" not in text
            # Coalesced: its refused writes and the worker's refused fetches (bullmq retries every 0.1 s) are a
            # line when it starts and one a minute, not one each.
            assert sum("OOM" in line for line in text.splitlines()) <= 3, text
            assert slot.proc.poll() is None
    finally:
        pool.stop()
        if late is not None:
            late.stop()
        await redis.aclose()
        valkey.stop()
