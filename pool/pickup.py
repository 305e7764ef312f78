"""An idle worker's wait for a job and its fetch in one round trip (PoolWorker, change 6).

bullmq's idle worker blocks on the queue's marker (`BZPOPMIN`) and, when a producer's `ZADD` wakes it, fetches
the job with a second call (`moveToActive`): two round trips between a job's arrival and its start. Here both
commands are written together on the blocking connection. Redis runs a connection's commands in order, so the
fetch runs the moment the wait returns and both replies come back in one read: the worker's wake-up, its write
and Redis' wake-up for the second call are gone from every pickup on an idle queue.

The fetch is bullmq's own `moveToActive` script with one line put in front: the fetch runs when the wait ends,
later than the worker could read its clock, so the script's timestamp argument (the job's `processedOn`, delayed
jobs due, the limiter's window) is the server's `TIME` at that moment instead. A wait that ends without a job
changes nothing: bullmq calls `moveToActive` after a timeout too, and after the marker of a delayed job not yet
due the script returns when it is due (bullmq skips that call).

Closing must not drop a fetch Redis may already have run (the job would sit active under a lock nobody renews
until the stall check takes it back). So the wait also blocks on a key of this worker's own; a graceful close
adds to it, the wait returns at once, the fetch runs, and a job it fetched is processed like any other before
the worker closes. Only a cancellation that is not a graceful close (the process being torn down) drops the
connection as bullmq does.

Upstream-ready: the change belongs in bullmq's `Worker.getNextJob`/`waitForJob`; tests/test_overrides.py guards
the copied code and tests/test_pickup.py the behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from typing import Any

import msgpack
from bullmq.scripts import raw2NextJobData
from bullmq.worker import short_retry_delay
from redis.exceptions import NoScriptError, RedisError

SERVER_TIME = (
    "ARGV[2] = tostring((function() local t = redis.call('TIME') "
    "return t[1] * 1000 + math.floor(t[2] / 1000) end)())\n"
)
"""Put in front of bullmq's `moveToActive`: its ARGV[2], the timestamp, becomes the server's clock in ms."""

_KEYS = [
    "wait",
    "active",
    "prioritized",
    "events",
    "stalled",
    "limiter",
    "delayed",
    "paused",
    "meta",
    "pc",
    "marker",
]
WAKE_S = 2.0
"""How long a close waits for its wake-up to end the wait and bring back the fetch (one round trip when Redis is
up); past it the connection is dropped as bullmq's cancelled wait is, so a Redis outage does not hold a shutdown."""
WAKE_TTL_MS = 10_000
"""A wake-up nobody popped (the wait had already returned) is gone after this, if the DEL after it failed."""


Fetched = tuple[dict[str, Any] | None, str | None, int, int]
"""What a fetch returned, as bullmq's `nextJobFromJobData` takes it: job data, id, limit_until, delay_until."""


def _fetched(raw: list[Any] | None) -> Fetched:
    job_data, job_id, limit_until, delay_until = raw or (None, None, 0, 0)
    return job_data, job_id, limit_until or 0, delay_until or 0


def _source(script: Any) -> str:
    """The Lua source of a bullmq command: a redis-py script, or our LeanScript around one."""
    source = getattr(script, "script", script)
    source = getattr(source, "script", source)
    return source.decode() if isinstance(source, bytes) else str(source)


class Pickup:
    """The wait-and-fetch of one worker (`worker`: a PoolWorker, read for its clients, keys and options)."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        scripts = worker.scripts
        self.source = SERVER_TIME + _source(scripts.commands["moveToActive"])
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()  # Redis names scripts by their SHA-1
        self.keys = scripts.getKeys(_KEYS)
        self.prefix = scripts.keys[""]
        self.wake_key = f"{worker.keys['marker']}:wake:{worker.id}"
        self.loaded = False

    async def wait_and_fetch(self, token: str) -> tuple[int, Fetched]:
        """Block for the queue's marker (or this worker's wake key) and fetch: (the marker's score, as bullmq's
        `waitForJob` returns it, 0 when none; the fetch's job data, id, limit_until, delay_until)."""
        worker = self.worker
        timeout = worker.getBlockTimeout(worker.blockUntil)
        if not worker.backend.capabilities.get("canDoubleTimeout", False):
            timeout = math.ceil(timeout)
        opts = worker.opts
        packed = msgpack.packb(
            {"token": token, "lockDuration": opts.get("lockDuration", 0), "limiter": opts.get("limiter")},
            use_bin_type=True,
        )
        pipe = worker.bclient.pipeline(transaction=False)
        pipe.bzpopmin([worker.keys["marker"], self.wake_key], timeout)
        pipe.execute_command("EVALSHA", self.sha, len(self.keys), *self.keys, self.prefix, 0, packed)
        try:
            if not self.loaded:  # once per worker: after a restart or a flush, NOSCRIPT below loads it again
                await worker.client.script_load(self.source)
                self.loaded = True
            reply = asyncio.ensure_future(pipe.execute())
            try:
                marker, raw = await asyncio.shield(reply)
            except asyncio.CancelledError:
                if worker.forceClosing or not (worker.closing or worker.paused):
                    # Torn down, or a forced close (it closes the connections without waiting for this): the
                    # connection is dropped, as bullmq's cancelled wait is. Not woken: redis-py would send a
                    # wait whose connection is closed under it again, on a new one, for a closed worker.
                    reply.cancel()
                    raise
                marker, raw = await self._woken(reply)
        except NoScriptError:
            # a new or flushed server: the wait ended (its marker may be spent) and the fetch did not run
            await worker.client.script_load(self.source)
            return 0, _fetched(await worker.scripts.moveToActive(token, opts))
        except Exception as error:
            if worker.isConnectionError(error) and not worker.closing and not worker.closed:
                await asyncio.sleep(short_retry_delay)  # as bullmq's waitForJob: the retry loop cannot spin
            raise
        score = int(marker[2]) if marker and marker[0] == worker.keys["marker"] and marker[1] else 0
        return score, _fetched(raw2NextJobData(raw))

    async def _woken(self, reply: asyncio.Future[Any]) -> tuple[Any, Any]:
        """A graceful close during the wait: wake it with this worker's own key and take what its fetch got."""
        try:
            got = await asyncio.wait_for(self._wake(reply), WAKE_S)
        except NoScriptError:  # the wait ended and its fetch did not run: the caller fetches as bullmq does
            raise
        except Exception:  # noqa: BLE001 - Redis gone (or slower than WAKE_S): dropped, as bullmq's cancel does
            reply.cancel()
            return None, None
        except asyncio.CancelledError:  # a forced close meanwhile
            reply.cancel()
            raise
        with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
            await asyncio.wait_for(self.worker.client.delete(self.wake_key), WAKE_S)  # else it expires
        return got  # type: ignore[no-any-return]

    async def _wake(self, reply: asyncio.Future[Any]) -> Any:
        async with self.worker.client.pipeline(transaction=True) as pipe:
            pipe.zadd(self.wake_key, {"close": 0})
            pipe.pexpire(self.wake_key, WAKE_TTL_MS)
            await pipe.execute()
        return await asyncio.shield(reply)
