"""An idle PoolWorker's wait and fetch in one round trip (pool/pickup.py), on a real Valkey: what Valkey runs,
the job's clock, delayed jobs, a flushed script cache, and a graceful close during the wait."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import bullmq
from bullmq import Queue

from pool import connection
from pool.pickup import WAKE_S
from pool.worker import PoolWorker, drain_locks_on_close
from tests.support.monitor import calls, watching
from tests.support.waits import completed_count_is, wait_for

DRAIN_S = 30
"""Long, so a wake-up lost to the change would show as a job not started in the tests' 10 s. One lane: every
fetch of an idle worker is then the wait's (with more, bullmq's refill fetches while one lane waits)."""


@contextlib.asynccontextmanager
async def idle_worker(
    url: str, queue_name: str, process: Callable[..., Any], concurrency: int = 1
) -> AsyncIterator[tuple[PoolWorker, Queue]]:
    client = connection.pooled_redis(url, max_connections=4)
    queue = Queue(queue_name, {"connection": client})
    worker = PoolWorker(
        queue_name,
        process,
        {"connection": client, "concurrency": concurrency, "autorun": False, "drainDelay": DRAIN_S},
    )
    drain_locks_on_close(worker)  # as pool/runtime.py builds its workers
    running = asyncio.ensure_future(worker.run())
    try:
        yield worker, queue
    finally:
        await worker.close(force=True)
        running.cancel()
        await queue.obliterate({"force": True})
        await client.aclose()


async def blocked_on(redis: Any, worker: PoolWorker) -> bool:
    """The worker is in its wait (its `waiting` is the pickup's) and Valkey holds a client blocked in BZPOPMIN.
    (bullmq names only the first connection of a pool, so the blocked client cannot be told by its name; the
    tests close their workers, and a wait left by a closed worker is a defect these tests look for.)"""
    waiting = worker.waiting
    if waiting is None or waiting.done():
        return False
    return await any_wait(redis)


async def any_wait(redis: Any) -> bool:
    """Some client is blocked in BZPOPMIN."""
    clients = await redis.client_list()
    return any(c.get("cmd") == "bzpopmin" and "b" in c.get("flags", "") for c in clients)


async def noop(job: Any, token: str) -> str:
    return "done"


async def test_the_job_that_wakes_the_wait_is_fetched_by_the_command_sent_with_it(valkey, redis):
    """Valkey's MONITOR: the waiting connection's next command after its BZPOPMIN is the fetch (our script), the
    worker sends no fetch of its own after the wake-up; the job's processedOn is Valkey's clock at the fetch."""
    name = "ma-test-pickup"
    async with idle_worker(valkey.url, name, noop) as (worker, queue):
        await wait_for(lambda: blocked_on(redis, worker), timeout=10, what="the idle worker's wait")
        sha = worker._pickup.sha
        async with watching(valkey.url) as seen:
            await queue.add("one", {"n": 1})
            await wait_for(lambda: completed_count_is(queue, 1), timeout=10, what="the first job completed")
            await wait_for(lambda: blocked_on(redis, worker), timeout=10, what="the wait after it")
            job = await queue.add("two", {"n": 2})
            await wait_for(lambda: completed_count_is(queue, 2), timeout=10, what="the second job completed")
        pairs = [
            (cmd, nxt[:2])
            for who in {w for w, _ in seen}
            for cmd, nxt in itertools.pairwise([c for w, c in seen if w == who])
            if cmd[0].upper() == "BZPOPMIN"
        ]
        assert pairs, f"no wait that ended was seen: {[c[:2] for _, c in seen]}"
        assert all(nxt == ["EVALSHA", sha] for _, nxt in pairs), f"a wait's connection ran next: {pairs}"
        hash_ = await redis.hgetall(f"bull:{name}:{job.id}")
        # the producer rounds its ms, the script floors Valkey's: 1 ms apart at most when both are the same ms
        assert int(hash_["timestamp"]) - 1 <= int(hash_["processedOn"]) <= int(hash_["finishedOn"]), hash_


async def test_a_delayed_job_starts_when_due_not_when_the_wait_returns(valkey, redis):
    """The fetch's timestamp is Valkey's clock when it runs: a job delayed 1.5 s is not promoted early by the wait
    that the delayed marker ends, and is not left for the 30-s drain delay either."""
    name = "ma-test-pickup-delayed"
    async with idle_worker(valkey.url, name, noop) as (worker, queue):
        await wait_for(lambda: blocked_on(redis, worker), timeout=10, what="the idle worker's wait")
        job = await queue.add("later", {"n": 1}, {"delay": 1500})
        await wait_for(lambda: completed_count_is(queue, 1), timeout=10, what="the delayed job completed")
        hash_ = await redis.hgetall(f"bull:{name}:{job.id}")
        assert int(hash_["processedOn"]) >= int(hash_["timestamp"]) + 1500, hash_


async def test_a_wait_whose_fetch_meets_a_flushed_script_cache_still_fetches_its_job(valkey, redis):
    """A restarted or flushed Valkey answers the fetch with NOSCRIPT after the wait took the marker: the worker
    loads the script and fetches then, instead of leaving the job to the next drain delay."""
    name = "ma-test-pickup-noscript"
    async with idle_worker(valkey.url, name, noop) as (worker, queue):
        await wait_for(lambda: blocked_on(redis, worker), timeout=10, what="the idle worker's wait")
        await redis.script_flush()
        await queue.add("after-flush", {"n": 1})
        await wait_for(
            lambda: completed_count_is(queue, 1), timeout=10, what="the job after the flush completed"
        )
        await queue.add("next", {"n": 2})
        await wait_for(lambda: completed_count_is(queue, 2), timeout=10, what="the next job completed")


async def test_closing_during_the_wait_ends_it_at_once_and_leaves_nothing_behind(valkey, redis):
    name = "ma-test-pickup-close"
    async with idle_worker(valkey.url, name, noop) as (worker, _queue):
        await wait_for(lambda: blocked_on(redis, worker), timeout=10, what="the idle worker's wait")
        await asyncio.wait_for(worker.close(), timeout=DRAIN_S / 3)  # not the drain delay's 30 s
        assert not await any_wait(redis), "the wait ended with the close"
        assert not await redis.exists(worker._pickup.wake_key), "the wake-up key is gone"


async def test_a_job_the_closing_wake_up_fetches_is_processed_before_the_worker_closes(valkey, redis):
    """Staged: a job reaches the queue's wait list without the marker a producer sets (moved in from another
    queue in one MULTI), so only the close's wake-up fetches it. It runs to completion under a renewed lock
    before close() returns: not left active for the stall check."""
    name = "ma-test-pickup-close-job"
    ran: list[str] = []

    async def slow(job: Any, token: str) -> str:
        await asyncio.sleep(0.5)
        ran.append(job.id)
        return "done"

    staging = Queue(f"{name}-staging", {"connection": redis})
    async with idle_worker(valkey.url, name, slow) as (worker, queue):
        await wait_for(lambda: blocked_on(redis, worker), timeout=10, what="the idle worker's wait")
        await stage_without_marker(redis, staging, name, "staged-1")
        assert await blocked_on(redis, worker), "the staged job did not wake the worker"
        await asyncio.wait_for(worker.close(), timeout=DRAIN_S / 3)
        assert ran == ["staged-1"], "the job fetched by the close's wake-up ran, once"
        assert await queue.getJobState("staged-1") == "completed"
        assert await redis.llen(f"bull:{name}:active") == 0
        assert not await redis.exists(worker._pickup.wake_key)
    await staging.obliterate({"force": True})


async def stage_without_marker(redis: Any, staging: Queue, name: str, job_id: str) -> None:
    """A job in the queue's wait list without the marker a producer sets: added to `staging` (a real producer's
    hash) and moved in, hash and list entry, in one MULTI, so no waiting worker is woken by it."""
    await staging.add("staged", {"n": 1}, {"jobId": job_id})
    async with redis.pipeline(transaction=True) as pipe:
        pipe.rename(f"bull:{staging.name}:{job_id}", f"bull:{name}:{job_id}")
        pipe.lmove(f"bull:{staging.name}:wait", f"bull:{name}:wait", "RIGHT", "LEFT")
        await pipe.execute()


def test_the_fetch_is_bullmqs_moveToActive_with_the_servers_clock_put_in_front():
    """What the prepended line relies on: ARGV[2] of bullmq's moveToActive is its timestamp (an upgrade that
    changes it fails here)."""
    lua = (Path(bullmq.__file__).parent / "commands" / "moveToActive-11.lua").read_text()
    assert "ARGV[2] timestamp" in lua, (
        "re-check pool/pickup.py: moveToActive's ARGV[2] is no longer the timestamp"
    )
    assert lua.count("ARGV[2]") == 4, (
        "re-check pool/pickup.py: moveToActive reads its timestamp elsewhere now"
    )


async def test_a_close_while_valkey_does_not_answer_is_not_held_by_the_wake_up(valkey, redis):
    """Valkey paused for writes (CLIENT PAUSE: it takes the commands and answers none): the close's wake-up waits
    WAKE_S, then drops the wait's connection as bullmq does, instead of holding the shutdown for the outage."""
    name = "ma-test-pickup-close-paused"
    async with idle_worker(valkey.url, name, noop) as (worker, _queue):
        await wait_for(lambda: blocked_on(redis, worker), timeout=10, what="the idle worker's wait")
        await redis.execute_command("CLIENT", "PAUSE", 15_000, "WRITE")
        try:
            await asyncio.wait_for(worker.close(), timeout=WAKE_S + 5)  # well inside the 15-s pause
        finally:
            await redis.execute_command("CLIENT", "UNPAUSE")


async def test_a_forced_close_during_the_wait_leaves_no_wait_behind(valkey, redis):
    """A forced close does not wait for its jobs and closes the connections at once: the wait is dropped, as
    bullmq's is, not woken (a wake-up in flight when its connection closes would be retried on a new one by
    redis-py, a wait and a fetch of a closed worker)."""
    name = "ma-test-pickup-forced"
    async with watching(valkey.url) as seen:  # until after the teardown too, as before
        async with idle_worker(valkey.url, name, noop) as (worker, queue):
            await queue.add("one", {"n": 1})
            await wait_for(lambda: completed_count_is(queue, 1), timeout=10, what="the job completed")
            await wait_for(lambda: blocked_on(redis, worker), timeout=10, what="the idle worker's wait")
            closing = len(seen)  # the waits before the close are the worker's own
            await asyncio.wait_for(worker.close(force=True), timeout=DRAIN_S / 3)
        await asyncio.sleep(2)  # redis-py's retries of a dropped command come within this
    assert not await any_wait(redis), "a wait of the closed worker"
    assert not calls(seen[closing:], "BZPOPMIN", f"bull:{name}:marker"), "a wait was sent after the close"


async def test_a_job_the_closing_wake_up_fetches_is_processed_when_another_lane_ends_first(valkey, redis):
    """Two lanes: one runs a job that ends right as the close begins, the other waits. bullmq's run loop stops
    taking jobs when a lane ends while closing; the job the close's wake-up fetched (staged as above) must still
    run, and close() return: not left active under a lock renewed for ever."""
    name = "ma-test-pickup-close-two"
    release = asyncio.Event()
    ran: list[str] = []

    async def work(job: Any, token: str) -> str:
        if job.name == "hold":
            await release.wait()
        ran.append(job.name)
        return "done"

    staging = Queue(f"{name}-staging", {"connection": redis})
    async with idle_worker(valkey.url, name, work, concurrency=2) as (worker, queue):
        await queue.add("hold", {"n": 0})
        await wait_for(lambda: worker.jobs, timeout=10, what="the held job running")
        await wait_for(lambda: blocked_on(redis, worker), timeout=10, what="the other lane's wait")
        await stage_without_marker(redis, staging, name, "staged-2")
        closing = asyncio.ensure_future(worker.close())
        release.set()  # the held lane ends (one round trip) before the wake-up is back (two)
        await asyncio.wait_for(closing, timeout=DRAIN_S / 3)
        assert sorted(ran) == ["hold", "staged"], ran
        assert await queue.getJobState("staged-2") == "completed"
        assert await redis.llen(f"bull:{name}:active") == 0
    await staging.obliterate({"force": True})
