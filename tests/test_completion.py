"""pool/completion.py builds the completing call's keys and arguments exactly as bullmq's
`Scripts.moveToCompletedArgs` does (all but the timestamp, which both take from the clock), across the queue's and
the job's options; the Lua script behind them is exercised by every test that completes a job."""

from __future__ import annotations

import itertools
import time

import msgpack
import pytest
from bullmq import Job, Worker
from redis.asyncio import Redis

from pool.completion import CompletionArgs

QUEUE_OPTS = [
    {},
    {"limiter": {"max": 50, "duration": 1000}, "lockDuration": 30000},
    {"metrics": {"maxDataPoints": 10080}, "prefix": "ma"},
]
REMOVE = [False, None, True, 0, 1000, {"count": 100}, {"age": 3600, "count": 10}]
JOB_OPTS = [{}, {"attempts": 5, "failParentOnFailure": True}, {"ignoreDependencyOnFailure": True}]
RESULTS = [None, {"orderId": "o-1", "n": 3}, "", 0, [1, "two"]]


@pytest.mark.parametrize("queue_opts", QUEUE_OPTS, ids=["defaults", "limiter", "metrics+prefix"])
async def test_completion_args_are_bullmqs(queue_opts):
    client = Redis()  # never connected: building arguments sends nothing
    worker = Worker("orders", None, {"connection": client, "autorun": False, **queue_opts})
    lean = CompletionArgs(worker.scripts)
    try:
        for (remove, job_opts, result, fetch), n in zip(
            itertools.product(REMOVE, JOB_OPTS, RESULTS, (True, False)), itertools.count()
        ):
            job = Job(worker, "order.placed", {"n": n}, dict(job_opts), f"j{n}")
            job.attemptsMade = n % 3
            before = round(time.time() * 1000)
            keys, args = lean(job, result, remove, "tok-1", fetch)
            want_keys, want_args = worker.scripts.moveToCompletedArgs(job, result, remove, "tok-1", fetch)
            assert keys == want_keys
            assert before <= args[1] <= want_args[1]
            assert [a for i, a in enumerate(args) if i != 1] == [a for i, a in enumerate(want_args) if i != 1]
            assert msgpack.unpackb(args[7]) == msgpack.unpackb(want_args[7])  # and byte-equal, above
    finally:
        await worker.close(force=True)
        await client.aclose()
