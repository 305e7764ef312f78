"""A slot during and after a Redis outage: its heartbeat is back as soon as Redis answers (no false
"0 workers" while jobs run) and the recovery event states the outage's real length."""

from __future__ import annotations

import asyncio
import re
import time

from bullmq import Queue
from redis.asyncio import Redis

from devstack import engines
from pool.contracts import EVENTS_STREAM, WORKERS_INDEX
from tests.support.waits import wait_for

Q = "identity-events"
OUTAGE_S = 12.0


async def test_heartbeat_returns_within_seconds_of_redis_and_the_recovery_event_states_the_outage(
    start_pool, tmp_path
):
    own = engines.valkey(tmp_path / "valkey").start()
    client = Redis.from_url(own.url, decode_responses=True)
    try:
        pool = start_pool(Q, REDIS_URL=own.url)
        await wait_for(lambda: client.zcard(WORKERS_INDEX), timeout=30, what="the first heartbeat")

        own.stop()
        stopped = time.monotonic()
        await asyncio.sleep(OUTAGE_S)  # the outage itself: Valkey is down for this long
        own.start()
        back = time.monotonic()
        outage = back - stopped
        await client.aclose()
        client = Redis.from_url(own.url, decode_responses=True)  # the old one's socket died with the server

        await wait_for(lambda: _beat_after(client, time.time() - 1), timeout=10, what="a fresh heartbeat")
        beat_delay = time.monotonic() - back
        assert beat_delay < 3.5, f"heartbeat back {beat_delay:.1f}s after Redis (retries are 1s apart)"

        recovered = await wait_for(lambda: _recovery(client), timeout=10, what="the recovery event")
        # The slot notices the outage at its next flush (up to one beat, 5 s, after Valkey stopped) and ends it
        # at its first successful flush: never longer than the outage plus a retry, never far shorter.
        assert outage - 5.5 <= recovered <= outage + 2.0, (recovered, outage)
        assert "Redis connection recovered after" in pool.text()

        job = await Queue(Q, {"connection": client}).add("test.sleep", {"seconds": 0})
        await wait_for(lambda: _completed(client, job.id), timeout=20, what="a job after the outage")
    finally:
        await client.aclose()
        own.stop()


async def _beat_after(client: Redis, since_s: float) -> bool:
    newest = await client.zrange(WORKERS_INDEX, -1, -1, withscores=True)
    return bool(newest) and newest[0][1] / 1000 >= since_s


async def _recovery(client: Redis) -> float | None:
    for _, fields in await client.xrange(EVENTS_STREAM):
        if fields.get("kind") == "redis-recovered":
            found = re.search(r"after ([\d.]+)s", fields["message"])
            assert found, fields
            return float(found.group(1))
    return None


async def _completed(client: Redis, job_id: str) -> bool:
    return await Queue(Q, {"connection": client}).getJobState(job_id) == "completed"
