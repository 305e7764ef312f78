"""The telemetry's flush against real Valkey: the backlog sample runs by EVALSHA, and a Redis that does not know
the script (a fresh one, one restarted, after SCRIPT FLUSH) still gets every sample, once. The RSS trail has its
own key, rewritten only when a point is added, and the collector reads it (or an older pool's, in its beat)."""

from __future__ import annotations

import json
import socket
import time

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from pool.contracts import (
    HEARTBEAT_TTL,
    RECENT_BUCKET_S,
    WORKERS_INDEX,
    bull_key,
    heartbeat_key,
    recent_field,
    recent_key,
    rss_trail_key,
    stats_key,
)
from pool.monitor.collector import Collector
from pool.telemetry import BACKLOG_SAMPLE_SHA, Telemetry


async def backlog_written(redis, queue: str) -> str | None:
    bucket = int(time.time()) // RECENT_BUCKET_S
    for key in (recent_key(bucket), recent_key(bucket - 1)):  # a flush that straddled a bucket's edge
        value = await redis.hget(key, recent_field(queue, "backlog"))
        if value is not None:
            return str(value)
    return None


async def test_a_flush_samples_the_backlog_by_evalsha_even_after_the_scripts_were_flushed(redis):
    queue = "flush-sample"
    await redis.rpush(bull_key(queue, "wait"), "1", "2", "3")
    await redis.script_flush()
    telemetry = Telemetry(queue, "flush-sample(1)", 1)
    telemetry.count("completed")

    await telemetry.flush(redis)  # the script is unknown: NOSCRIPT, then one EVAL that also caches it
    assert await backlog_written(redis, queue) == "3"
    assert (await redis.script_exists(BACKLOG_SAMPLE_SHA)) == [True]
    assert await redis.hget(stats_key(queue), "completed") == "1"

    await redis.rpush(bull_key(queue, "wait"), "4")
    telemetry.count("completed")
    await telemetry.flush(redis)  # known now: EVALSHA alone
    assert await backlog_written(redis, queue) == "4"
    assert await redis.hget(stats_key(queue), "completed") == "2"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def trail_of(redis, pid: int) -> tuple[tuple[int, int], ...]:
    snapshot = await Collector(redis, []).fetch()
    (beat,) = [w for w in snapshot.workers if w.pid == pid]
    return beat.rss_trail


async def test_the_rss_trail_is_written_when_a_point_is_added_not_with_every_beat(redis):
    telemetry = Telemetry("trail", "trail(1)", 1, trail_every=3600)
    trail_key = rss_trail_key(telemetry.heartbeat_key)

    await telemetry.flush(redis)
    assert "rssTrail" not in json.loads(await redis.get(telemetry.heartbeat_key))
    (point,) = json.loads(await redis.get(trail_key))
    assert point[1] > 0 and 0 < await redis.ttl(trail_key) <= HEARTBEAT_TTL
    assert await trail_of(redis, telemetry.pid) == (tuple(point),)

    await redis.set(trail_key, "[[1, 2]]")  # a beat with no new point leaves the trail as it is...
    await telemetry.flush(redis)
    assert await redis.get(trail_key) == "[[1, 2]]"
    assert 0 < await redis.ttl(trail_key) <= HEARTBEAT_TTL  # ...and renews it with the beat
    assert await trail_of(redis, telemetry.pid) == ((1, 2),)

    unreachable = Redis(port=closed_port(), socket_connect_timeout=1)  # an outage long enough for the
    with pytest.raises((RedisError, OSError)):  # trail to expire: the next flush that lands writes it again
        await telemetry.flush(unreachable)
    await unreachable.aclose()
    await redis.delete(trail_key)
    await telemetry.flush(redis)
    assert json.loads(await redis.get(trail_key)) == [point]

    await telemetry.retire(redis)
    assert not await redis.exists(trail_key, telemetry.heartbeat_key)


async def test_an_older_pools_trail_inside_its_beat_is_still_read(redis):
    key = heartbeat_key("old-host", 4242)
    beat = {"host": "old-host", "pid": 4242, "queue": "trail", "lastBeat": int(time.time() * 1000)}
    await redis.set(key, json.dumps({**beat, "rssTrail": [[5, 6], [7, 8]]}), ex=HEARTBEAT_TTL)
    await redis.zadd(WORKERS_INDEX, {key: int(time.time() * 1000)})
    assert await trail_of(redis, 4242) == ((5, 6), (7, 8))
