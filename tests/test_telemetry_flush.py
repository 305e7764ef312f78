"""The telemetry's flush against real Valkey: the backlog sample runs by EVALSHA, and a Redis that does not know
the script (a fresh one, one restarted, after SCRIPT FLUSH) still gets every sample, once."""

from __future__ import annotations

import time

from pool.contracts import RECENT_BUCKET_S, bull_key, recent_field, recent_key, stats_key
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
