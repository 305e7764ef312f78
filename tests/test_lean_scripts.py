"""pool/lean_scripts.py: bullmq's scripts sent as a plain EVALSHA, with redis-py's script object stepping in for
NOSCRIPT (Redis restarted or flushed its scripts) and for a caller's own pipeline."""

from __future__ import annotations

import asyncio
from typing import Any

from bullmq import Queue

from pool import connection
from pool.lean_scripts import LeanScript
from pool.worker import PoolWorker
from tests.support.waits import completed_count_is, wait_for


async def test_a_lean_script_answers_as_redis_pys_after_a_script_flush_and_in_a_pipeline(valkey, redis):
    client = connection.pooled_redis(valkey.url, max_connections=4, autopipeline=True)
    try:
        lean = LeanScript(client.register_script("return {KEYS[1], ARGV[1]}"))
        assert await lean(["k"], ["a"]) == ["k", "a"]
        await redis.script_flush()
        assert await lean(["k"], ["b"]) == ["k", "b"], "NOSCRIPT: loaded again and answered"
        async with client.pipeline(transaction=False) as pipe:
            await lean(["k"], ["c"], client=pipe)
            assert await pipe.execute() == [["k", "c"]]
        assert await lean(keys=None, args=None) == []  # no keys, no arguments: Lua's {nil, nil} is empty
    finally:
        await client.aclose()


async def test_a_pool_worker_completes_jobs_through_lean_scripts_across_a_script_flush(valkey, redis):
    queue_name = "ma-test-lean-scripts"
    client = connection.pooled_redis(valkey.url, max_connections=6, autopipeline=True)
    queue = Queue(queue_name, {"connection": client})
    ran: list[int] = []

    async def process(job: Any, token: str) -> dict[str, int]:
        ran.append(job.data["n"])
        if job.data["n"] == 4:
            await redis.script_flush()  # as a Redis restart would: every script unknown from here on
        return {"n": job.data["n"]}

    worker = PoolWorker(queue_name, process, {"connection": client, "concurrency": 1, "autorun": False})
    assert all(isinstance(s, LeanScript) for s in worker.scripts.commands.values())
    running = asyncio.ensure_future(worker.run())
    try:
        await queue.addBulk([{"name": "n", "data": {"n": n}} for n in range(10)])
        await wait_for(lambda: completed_count_is(queue, 10), timeout=30, what="the 10 jobs completed")
        assert sorted(ran) == list(range(10)), "each job ran once"
        job = await queue.getJob(await _last_completed_id(queue))
        assert job.returnvalue == {"n": job.data["n"]}
    finally:
        await worker.close(force=True)
        running.cancel()
        await queue.obliterate({"force": True})
        await client.aclose()


async def _last_completed_id(queue: Queue) -> str:
    jobs = await queue.getJobs(["completed"], 0, 0)
    return str(jobs[0].id)
