"""Least privilege enforced by Redis itself: the users `ma-worker redis-acl` prints are applied to the real
Valkey; the pool processes Node-produced jobs under its user, the exporter and `ma-top --once` read under the
reader, Redis logs no denial for any of that, and Redis refuses the reader's writes and the pool user's
dangerous commands and foreign keys."""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, ResponseError

from pool.contracts import EVENTS_STREAM, bull_key
from tests.support.exporter import value
from tests.support.node import node_add
from tests.support.paths import BIN, ROOT
from tests.support.top import badge, first_screen, once
from tests.support.waits import settle, wait_for

Q = "identity-events"
POOL_PASSWORD = "pool-pw-7f3a"
READER_PASSWORD = "reader-pw-91c2"
POOL_USER, READER_USER = "ma-pool-acltest", "ma-reader-acltest"


def redis_acl(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MA_")}
    return subprocess.run(
        [str(BIN / "ma-worker"), "redis-acl", "--pool-user", POOL_USER, "--reader-user", READER_USER],
        env={**base, "MA_QUEUE_TABLE": "tests.support.table:QUEUES", "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def user_url(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}").geturl()


@pytest.fixture
async def acl_users(redis: Redis) -> AsyncIterator[list[str]]:
    out = redis_acl(MA_REDIS_POOL_PASSWORD=POOL_PASSWORD, MA_REDIS_READER_PASSWORD=READER_PASSWORD)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for line in lines:
        await redis.execute_command(*shlex.split(line))
    await redis.execute_command("ACL", "LOG", "RESET")
    yield lines
    await redis.execute_command("ACL", "DELUSER", POOL_USER, READER_USER)


async def denials(redis: Redis) -> list[dict[str, Any]]:
    entries: list[Any] = await redis.execute_command("ACL", "LOG")
    return [dict(zip(e[::2], e[1::2], strict=True)) if isinstance(e, list) else e for e in entries]


def test_the_lines_hold_no_password_and_refuse_missing_or_equal_passwords():
    out = redis_acl(MA_REDIS_POOL_PASSWORD=POOL_PASSWORD, MA_REDIS_READER_PASSWORD=READER_PASSWORD)
    assert out.returncode == 0 and POOL_PASSWORD not in out.stdout and READER_PASSWORD not in out.stdout
    pool, reader = out.stdout.splitlines()
    assert f"~bull:{Q}:*" in pool and "~ma:*" in pool and "-@dangerous" in pool
    assert "%R~bull:*" in reader and "-@write" in reader and "scripting" not in reader
    missing = redis_acl(MA_REDIS_POOL_PASSWORD=POOL_PASSWORD)
    assert missing.returncode == 2 and "MA_REDIS_READER_PASSWORD is not set" in missing.stderr
    same = redis_acl(MA_REDIS_POOL_PASSWORD="x", MA_REDIS_READER_PASSWORD="x")
    assert same.returncode == 2 and "must differ" in same.stderr


async def test_the_pool_and_the_read_only_tools_work_under_their_users_and_redis_refuses_the_rest(
    acl_users, redis, valkey, start_pool, node_bullmq, exporter, tmp_path
):
    pool_url = user_url(valkey.url, POOL_USER, POOL_PASSWORD)
    reader_url = user_url(valkey.url, READER_USER, READER_PASSWORD)

    # the pool, under its user, runs jobs a Node producer added (with the default user)
    pool = start_pool(Q, REDIS_URL=pool_url)
    ids = await asyncio.to_thread(
        node_add,
        node_bullmq,
        valkey.url,
        Q,
        [
            *(
                {"name": "test.effect", "data": {"key": f"acl-{i}"}, "opts": {"jobId": f"acl-{i}"}}
                for i in range(3)
            ),
            # retried once: the backoff, the delayed set and its promotion run under the pool's user too
            *(
                {
                    "name": "test.flaky",
                    "data": {"key": f"acl-f{i}", "succeedOnAttempt": 2},
                    "opts": {"jobId": f"acl-f{i}"},
                }
                for i in range(2)
            ),
        ],
    )
    for job_id in ids:
        job = await settle(redis, Q, job_id, timeout=60)
        assert await redis.zscore(bull_key(Q, "completed"), job_id), job.failedReason
    assert pool.proc.poll() is None, pool.text()
    clients = await redis.client_list()
    assert {c["user"] for c in clients} >= {POOL_USER}, "the pool connected as its user"

    # the read-only tools, under the reader
    snap = await asyncio.to_thread(once, reader_url, tmp_path)
    assert snap["redis"]["up"] and not snap["errors"], snap["errors"]
    assert next(q for q in snap["queues"] if q["name"] == Q)["counts"]["completed"] >= 5, snap["queues"]
    scraped = exporter(reader_url)
    await wait_for(lambda: value(scraped.scrape(), "ma_redis_up") == 1.0, what="the exporter reading Redis")
    await wait_for(
        lambda: value(scraped.scrape(), "ma_exporter_source_up", source="duplicates") == 1.0,
        what="the exporter's duplicate check",
    )
    reader = Redis.from_url(reader_url, decode_responses=True)
    async with first_screen(
        reader, tmp_path
    ) as app:  # interactive ma-top too: its events, bulk channel, views
        await wait_for(lambda: badge(app, Q) is not None and app.state.snapshot is not None, what="a tick")
        await wait_for(lambda: app.state.last_event != "-", what="ma-top reading the events stream")
        await asyncio.sleep(1)  # a few more ticks, the duplicate check and the processes read
        assert not app.state.all_errors(app.state.snapshot), app.state.all_errors(app.state.snapshot)
    assert await denials(redis) == [], "Redis refused something the pool or the read-only tools need"

    owner = Redis.from_url(pool_url, decode_responses=True)
    try:
        for write in (
            reader.set(bull_key(Q, "acl-probe"), "1"),
            reader.xadd(EVENTS_STREAM, {"kind": "probe"}),
            reader.delete(bull_key(Q, "acl-0")),
            reader.eval("return 1", 0),
        ):
            with pytest.raises(NoPermissionError):
                await write
        for refused in (
            owner.set("other:key", "1"),  # not its keys
            owner.flushall(),
            owner.config_set("maxmemory-policy", "allkeys-lru"),
            owner.keys("*"),
        ):
            with pytest.raises((NoPermissionError, ResponseError)):
                await refused
    finally:
        await reader.aclose()
        await owner.aclose()
    assert await redis.exists(bull_key(Q, "acl-0")) == 1, "the reader's delete was refused"
    assert await redis.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
