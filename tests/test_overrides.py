"""Guards on the library code we copy or bypass: an upgrade of bullmq or redis-py that changes any of it fails
here, naming the file of ours to re-check, instead of silently running an old copy next to new internals.

Each fingerprint is the sha256 of the upstream method's source as of the version named. After an upgrade:
read the upstream diff of each failing method, carry what matters into the file named, run
`tests/test_connection.py`, `tests/test_dispatch.py` and `tests/test_lifecycle.py` (the last two also run with
`MA_STOCK_CLIENTS=1`), then record the new fingerprints printed by the failure and the new version pin.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from importlib.metadata import version
from typing import Any

import pytest
from bullmq import Job, Queue, Worker
from bullmq.backends.redis_backend import RedisBackend
from bullmq.lock_manager import LockManager
from bullmq.scripts import Scripts
from redis._parsers.hiredis import _AsyncHiredisParser  # noqa: PLC2701 - guarded: AutoPipeline reads its state
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelManagedConnection
from redis.commands.core import AsyncScript, ScriptCommands

from pool import connection
from pool.worker import PoolWorker
from tests.support.monitor import calls, watching
from tests.support.waits import completed_count_is, wait_for

# (library, version written against, our file, upstream object, fingerprint)
GUARDED = [
    (
        "bullmq",
        "3.4.4",
        "pool/worker.py (DrainingLockManager: run closes the LockManager while jobs still run)",
        Worker.run,
        "abfb25f9c2a59142f21da8c1962209ec832445f5ef8e1b8aba9f32ac38871343",
    ),
    (
        "bullmq",
        "3.4.4",
        "pool/worker.py (DrainingLockManager)",
        LockManager.close,
        "805d42124ee8956e64f63641de34d5f3f4f01cfb654559f83870292df261534d",
    ),
    (
        "bullmq",
        "3.4.4",
        "pool/worker.py",
        Worker.processJob,
        "1eb52a13d9cc583e67ed0c2f2451a3dd6de8db69bd8ebaaf685ada4ec7f31235",
    ),
    (
        "bullmq",
        "3.4.4",
        "pool/worker.py (PoolWorker.getNextJob: a rate-limited worker waits out the window)",
        Worker.getNextJob,
        "cbcd06c8d92e6c319706e60703f3794647ad017bf51c410a4961c781d4aafe42",
    ),
    (
        "bullmq",
        "3.4.4",
        "pool/pickup.py (Pickup.wait_and_fetch: the wait of this, sent with the fetch)",
        Worker.waitForJob,
        "e58ff10db89461fd5e6bb41726047ab2418cafa80614dade83a4a6f702414395",
    ),
    (
        "bullmq",
        "3.4.4",
        "pool/pickup.py (Pickup.wait_and_fetch: the BZPOPMIN of this, on the marker and the wake key)",
        RedisBackend.waitForJob,
        "65a3a31d767fc028c520c55eb1df93b204e248b8fbd5becbf90be5954269b141",
    ),
    (
        "bullmq",
        "3.4.4",
        "pool/pickup.py (Pickup.wait_and_fetch: this fetch's keys and arguments)",
        Scripts.moveToActive,
        "7d82da56df71d1612c5f58f62d82d8d3076dbedd41184d7605f833fc09ba4b39",
    ),
    (
        "bullmq",
        "3.4.4",
        "pool/worker.py",
        Worker.nextJobFromJobData,
        "aef9dc4d3e211a78a0fafc5fcc5fd43bfe515abe9aac419df00383b9d8179997",
    ),
    (
        "bullmq",
        "3.4.4",
        "pool/completion.py (CompletionArgs builds these arguments)",
        Scripts.moveToFinishedArgs,
        "06192ce4b86c674144a54adb3a8897283098f90be289aa4af4115170fdb5a32c",
    ),
    (
        "bullmq",
        "3.4.4",
        "pool/worker.py (PoolWorker._process_one completes as this does, through Scripts.moveToFinished)",
        RedisBackend.moveToCompleted,
        "444c1cb4c74606e30703fab9768d653df0912ca774c6ba110ef7dcdc5b1977c2",
    ),
    (
        "bullmq",
        "3.4.4",
        "pool/fastjson.py (decodes with the `json` of bullmq.job: `loads` only)",
        Job.fromJSON,
        "a36e87f2199ed74c6e5bcee8df5caa603f6e3144b01b75b61ea21ef778bd08cb",
    ),
    (
        "redis",
        "8.1.0",
        "pool/lean_scripts.py (LeanScript sends what this sends, without its per-call checks)",
        AsyncScript.__call__,
        "6ebd89ad2abddad440680b23754f51fb419a18369dccc7502cf7b1e7cd713899",
    ),
    (
        "redis",
        "8.1.0",
        "pool/lean_scripts.py (EVALSHA is execute_command('EVALSHA', sha, numkeys, *keys_and_args))",
        ScriptCommands._evalsha,
        "5405f4c2984b7d7e73feec5f68829806782142a2d8828004ee7e1be70c481b46",
    ),
    (
        "redis",
        "8.1.0",
        "pool/connection.py",
        BlockingConnectionPool.__init__,
        "ad793b0ea901acfbc920c1596f32f56892f33051af3b77f75b2a474d8ca031bd",
    ),
    (
        "redis",
        "8.1.0",
        "pool/connection.py",
        BlockingConnectionPool.get_connection,
        "6382c8e6cc2841e40846555772912a4f751e06b246f12c0de72b570554ad69b4",
    ),
    (
        "redis",
        "8.1.0",
        "pool/connection.py",
        BlockingConnectionPool.release,
        "8432b41b6823a7d58f356d00a3b09c79b95369b44a4e39ad87e35e1de210aa86",
    ),
    (
        "redis",
        "8.1.0",
        "pool/connection.py",
        ConnectionPool.ensure_connection,
        "d144a7b72ed399c20b9ec215cd245986ae540752e79b24a5c621bd8d5bc180ec",
    ),
    (
        "redis",
        "8.1.0",
        "pool/connection.py",
        AbstractConnection.should_reconnect,
        "0fa2142effe06284ae46ae07cd71e3f0484c6b7bd8411bc3d10c7db499e68564",
    ),
    (
        "redis",
        "8.1.0",
        "pool/connection.py",
        AbstractConnection.pack_command,
        "9a0e503fdcf56314bc4acfdf1a45f5382356b83fef31be800ca7d127bcc78745",
    ),
    (
        "redis",
        "8.1.0",
        "pool/connection.py",
        Redis.execute_command,
        "b35fa092ad038e77b2bed122b18cd81fd57e4bd56c7e3d3a9441709ef891a169",
    ),
    (
        "redis",
        "8.1.0",
        "pool/connection.py",
        Redis._send_command_parse_response,
        "69d31e525eaca8973e75f2dd4a9094ae2fa89089678c12eb1926f159bf2badc4",
    ),
    (
        "redis",
        "8.1.0",
        "pool/connection.py",
        Redis._close_connection,
        "524811960c4d961e258446bf807dfce39ee2ccc4bf7c5c4fff3f9adabe338509",
    ),
    (
        "redis",
        "8.1.0",
        "pool/connection.py",
        Redis.from_pool,
        "f114920bc559f86c760a452d47d6814215ae9af42ba932036f322cbd61f2c734",
    ),
    (
        "redis",
        "8.1.0",
        "pool/connection.py (PipelinedRedis._pipelined copies its reply handling)",
        Redis.parse_response,
        "d66cfb53d08c4160fed389e1cf2862d7ad74150a0fe63044bef457773e025fec",
    ),
    (
        "redis",
        "8.1.0",
        "pool/autopipeline.py (AutoPipeline reads the parser's _stream and _reader)",
        _AsyncHiredisParser.on_connect,
        "5c7b848496314124f40e3684eca6edab6a0435a46cae9e62980eb497516db013",
    ),
    (
        "redis",
        "8.1.0",
        "pool/autopipeline.py (AutoPipeline._read replaces it)",
        _AsyncHiredisParser.read_response,
        "6cba18b62d2aad4dfe9e4be4e3bbb834ba4728640cbba421587e31bc096b2315",
    ),
    (
        "redis",
        "8.1.0",
        "pool/autopipeline.py (AutoPipeline._read raises error replies as it does)",
        AbstractConnection.read_response,
        "c1b374bc1a30d0b4f987af86e3ce475a1a1288382dc140b39f436d25beebe5d4",
    ),
    (
        "redis",
        "8.1.0",
        "pool/autopipeline.py (AutoPipeline._flush writes to the connection's writer directly)",
        AbstractConnection.send_packed_command,
        "baaeabd916209157db40455f034a0bac6fb3e2db902271313e0702bcbc678321",
    ),
    (
        "redis",
        "8.1.0",
        "pool/autopipeline.py (AutoPipeline._read copies its READONLY handling and reads the pool's is_master)",
        SentinelManagedConnection.read_response,
        "843a8258ad0dddfddeb049f36b29140289496cb67fa749e2b017328fe8264da6",
    ),
    (
        "redis",
        "8.1.0",
        "pool/autopipeline.py (AutoPipeline._read replaces its read loop)",
        _AsyncHiredisParser.read_from_socket,
        "6cad7e2b45b7ba1dd08db3a092435d647fe664bba18a0972d96983f25629f27d",
    ),
    (
        "redis",
        "8.1.0",
        "pool/connection.py (PipelinedRedis passes it an async failure callback)",
        Retry.call_with_retry,
        "70823e304bc67f4ab678a0cf72c647d5e421383f2b34b3affc289a0d39c0270b",
    ),
]


def fingerprint(obj: object) -> str:
    return hashlib.sha256(inspect.getsource(inspect.unwrap(obj)).encode()).hexdigest()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("library", "written_against", "ours", "upstream", "expected"),
    GUARDED,
    ids=[f"{g[0]}:{g[3].__qualname__}" for g in GUARDED],
)
def test_upstream_code_we_copy_or_bypass_is_the_code_we_checked(
    library, written_against, ours, upstream, expected
):
    installed = version(library)
    got = fingerprint(upstream)
    assert got == expected, (
        f"re-check {ours} against {library} {installed}: {upstream.__qualname__} changed since {written_against} "
        f"(new fingerprint {got})"
    )


def test_the_fast_path_is_on_for_the_verified_redis_py_and_fails_closed_otherwise(monkeypatch):
    assert connection.FAST_PATH, "redis-py is the verified line and has every internal the fast path reads"
    monkeypatch.setattr(connection.redis_py, "__version__", "8.2.0")
    assert not connection.redis_internals_ok(), "another redis-py line turns the fast path off"
    monkeypatch.undo()
    monkeypatch.delattr(BlockingConnectionPool, "set_in_maintenance")  # unrelated: still on
    assert connection.redis_internals_ok()
    monkeypatch.undo()
    monkeypatch.delattr(Redis, "_close_connection")
    assert not connection.redis_internals_ok(), "a missing internal turns the fast path off"


@pytest.mark.parametrize("stock", [False, True], ids=["lean", "stock"])
async def test_closing_the_pooled_client_closes_every_connection_of_its_pool(valkey, redis, stock):
    name = f"ma-test-close-{'stock' if stock else 'lean'}"
    client = connection.pooled_redis(valkey.url, max_connections=4, name=name, stock=stock)
    await asyncio.gather(*(client.blpop(["ma-test:nothing"], timeout=0.2) for _ in range(3)))

    async def open_connections() -> int:
        return sum(1 for c in await redis.client_list() if c.get("name") == name)

    assert await open_connections() == 3, "three concurrent calls held three pooled connections"
    await client.aclose()
    await wait_for(lambda: _none(open_connections()), timeout=5, what="the pool's connections closed")


async def _none(count: Any) -> bool:
    return await count == 0


class _FetchFault(PoolWorker):
    """A bullmq failure (not a decoding one) while building the job that a completion fetched."""

    async def nextJobFromJobData(self, job_data: Any = None, *args: Any, **kwargs: Any) -> Any:
        if job_data and job_data.get("name") == "unreadable":
            raise RuntimeError("simulated library failure")
        return await super().nextJobFromJobData(job_data, *args, **kwargs)


async def test_a_job_fetched_with_a_completion_that_cannot_be_built_fails_at_once_and_the_completed_one_stays_completed(
    valkey, redis
):
    queue_name = "ma-test-fetch-fault"
    client = connection.pooled_redis(valkey.url, max_connections=4)
    queue = Queue(queue_name, {"connection": client})
    first = await queue.add("readable", {"n": 1}, {"attempts": 3})
    second = await queue.add("unreadable", {"n": 2}, {"attempts": 3})

    async def process(job: Any, token: str) -> str:
        await asyncio.sleep(0.05)
        return "done"

    worker = _FetchFault(queue_name, process, {"connection": client, "concurrency": 1, "autorun": False})
    running = asyncio.ensure_future(worker.run())
    try:
        state = await wait_for(
            lambda: _state(queue, second.id, "failed"), timeout=10, what="the unreadable job failed"
        )
        assert state
        assert await queue.getJobState(first.id) == "completed", "the completed job was not failed afterwards"
        reason = await redis.hget(f"bull:{queue_name}:{second.id}", "failedReason")
        assert "could not read the job fetched after a completion" in reason, reason
        assert "simulated library failure" in reason
    finally:
        await worker.close(force=True)
        running.cancel()
        await queue.obliterate({"force": True})
        await client.aclose()


async def _state(queue: Queue, job_id: str, want: str) -> bool:
    return await queue.getJobState(job_id) == want


async def test_a_job_that_cannot_be_built_is_failed_with_its_own_options(valkey, redis):
    """Its producer's `removeOnFail` is honoured: the options are read from the raw hash, not dropped."""
    queue_name = "ma-test-fetch-fault-opts"
    client = connection.pooled_redis(valkey.url, max_connections=4)
    queue = Queue(queue_name, {"connection": client})
    await queue.add("readable", {"n": 1}, {"attempts": 3})
    second = await queue.add("unreadable", {"n": 2}, {"attempts": 3, "removeOnFail": True})

    async def process(job: Any, token: str) -> str:
        await asyncio.sleep(0.05)
        return "done"

    async def gone() -> bool:
        return not await redis.exists(f"bull:{queue_name}:{second.id}") and await queue.getFailedCount() == 0

    worker = _FetchFault(queue_name, process, {"connection": client, "concurrency": 1, "autorun": False})
    running = asyncio.ensure_future(worker.run())
    try:
        await wait_for(lambda: _state(queue, second.id, "unknown"), timeout=10, what="the job left active")
        assert await gone(), "removeOnFail: the failed job's hash was removed, as its producer asked"
    finally:
        await worker.close(force=True)
        running.cancel()
        await queue.obliterate({"force": True})
        await client.aclose()


async def test_a_rate_limited_worker_fetches_when_the_window_ends_not_after_drain_delay(valkey, redis):
    """bullmq-python blocks on the queue's marker while limited (BZPOPMIN for `drainDelay`); PoolWorker waits the
    limiter's window, as Node BullMQ does. Counted in Valkey's MONITOR: 30 jobs at 5 per window are 5 limited waits,
    which were 5 BZPOPMINs of `drainDelay` each; now at most the one after the queue drained."""
    queue_name = "ma-test-limited"
    client = connection.pooled_redis(valkey.url, max_connections=4)
    queue = Queue(queue_name, {"connection": client})
    await queue.addBulk([{"name": "limited", "data": {"n": n}} for n in range(30)])
    done: list[int] = []

    async def process(job: Any, token: str) -> str:
        done.append(job.data["n"])
        return "done"

    worker = PoolWorker(
        queue_name,
        process,
        {
            "connection": client,
            "concurrency": 2,
            "autorun": False,
            "drainDelay": 2,
            "limiter": {"max": 5, "duration": 300},
        },
    )
    try:
        async with watching(valkey.url) as seen:  # on before the worker starts: each of its waits is seen
            running = asyncio.ensure_future(worker.run())
            try:
                await wait_for(
                    lambda: completed_count_is(queue, 30), timeout=60, what="the 30 jobs completed"
                )
            finally:
                await worker.close(force=True)
                running.cancel()
        blocking = len(calls(seen, "BZPOPMIN", f"bull:{queue_name}:marker"))
        assert blocking <= 1, f"{blocking} BZPOPMIN calls: the limited waits blocked on the marker"
        assert sorted(done) == list(range(30)), "each job ran once"
    finally:
        await queue.obliterate({"force": True})
        await client.aclose()
