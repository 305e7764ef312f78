"""What a pool process tells the world: the `ma:events` stream, its heartbeat record, coalesced throttles.

Writes are buffered and flushed by one background loop, so a job never waits on telemetry and
events raised while Redis is down are delivered once it is back (bounded buffer).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import psutil
from redis.exceptions import NoScriptError, RedisError

from pool.contracts import (
    EVENTS_MAXLEN,
    EVENTS_STREAM,
    HEARTBEAT_TTL,
    QUEUES_REGISTRY,
    RECENT_BUCKET_S,
    RECENT_KEEP_S,
    WORKERS_INDEX,
    Heartbeat,
    bull_key,
    heartbeat_key,
    recent_field,
    recent_key,
    rss_trail_key,
    stats_key,
)
from pool.downstream import DownstreamCounts
from pool.redis_full import FullRedis, is_oom

if TYPE_CHECKING:
    from bullmq import Job
    from redis.asyncio import Redis
    from redis.typing import EncodableT, FieldT

    from pool.queue_table import QueueSpec

HEARTBEAT_EVERY = 5.0
RETRY_EVERY = 1.0
"""While Redis is unreachable, try again this often: the heartbeat is back within a second of Redis, so no
dashboard says "0 workers" while jobs run. Only the log line backs off (checks 1, 2, 4, 8, ...)."""
THROTTLE_WINDOW = 30.0
TRAIL_EVERY = 60.0
"""Seconds between the points of the RSS trail a heartbeat carries (MA_RSS_TRAIL_INTERVAL)."""
TRAIL_POINTS = 60
"""Points in the trail: an hour at the default spacing."""

log = logging.getLogger("pool.telemetry")

BACKLOG_SAMPLE = """
local backlog = redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])
local completed = redis.call('HGET', KEYS[3], 'count') or '0'
local failed = redis.call('HGET', KEYS[4], 'count') or '0'
redis.call('HSET', KEYS[5], ARGV[1] .. '|backlog', backlog, ARGV[1] .. '|completed_total', completed,
    ARGV[1] .. '|failed_total', failed)
redis.call('EXPIRE', KEYS[5], ARGV[2])
return backlog
"""
"""The queue's backlog (waiting + prioritized) and BullMQ's cumulative completed/failed counts, read and written
into the current recent bucket in one step: a time series of the backlog that every reader (even a one-shot
`ma-top --once`) takes the arrivals and the drain rate from. Gauges: the last writer of a bucket wins."""
BACKLOG_SAMPLE_SHA = hashlib.sha1(BACKLOG_SAMPLE.encode()).hexdigest()
"""Run by EVALSHA in each flush's pipeline (the script body is not resent every beat). Not redis-py's
`register_script`: inside a pipeline it costs a SCRIPT EXISTS round trip on every execute. A Redis that does
not know the script yet (first flush, restart, SCRIPT FLUSH) answers NOSCRIPT: the flush then runs it once by
EVAL, which also caches it."""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _ThrottleWindow:
    line: str
    opened: float
    count: int = 0
    """Throttles after the window's first one (that one is its own event, logged at once)."""
    since: int = 0
    until: int = 0
    """Epoch ms of the first and last of those throttles: the span the window's event stands for."""


class _Usage:
    """This process's RSS and its CPU since the previous reading, from one cheap psutil call each (once a beat):
    what lets ma-top show the memory and CPU of every host's processes, not only its own host's. Also a trail of
    the last `TRAIL_POINTS` RSS readings, one per `trail_every` seconds, so a dashboard opened now (or a one-shot
    `ma-top --once`) sees the last hour's trend at once instead of after watching for it."""

    def __init__(self, trail_every: float = TRAIL_EVERY) -> None:
        self._proc = psutil.Process()
        self._at = time.monotonic()
        self._cpu_s = self._cpu()
        self.trail_every = trail_every
        self.trail: deque[tuple[int, int]] = deque(maxlen=TRAIL_POINTS)
        """(epoch ms, RSS bytes), oldest first."""

    def _cpu(self) -> float:
        times = self._proc.cpu_times()
        return float(times.user + times.system)

    def read(self) -> tuple[int, float]:
        """(RSS bytes, CPU % of one core since the previous read); (0, 0.0) if the OS will not tell."""
        try:
            rss = int(self._proc.memory_info().rss)
            now, cpu_s = time.monotonic(), self._cpu()
        except psutil.Error:
            return 0, 0.0
        elapsed = now - self._at
        percent = max(0.0, (cpu_s - self._cpu_s) / elapsed * 100) if elapsed > 0 else 0.0
        self._at, self._cpu_s = now, cpu_s
        at = now_ms()
        if not self.trail or at - self.trail[-1][0] >= self.trail_every * 1000:
            self.trail.append((at, rss))
        return rss, round(percent, 1)


@dataclass
class Telemetry:
    queue: str
    process_name: str
    concurrency: int
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started: int = field(default_factory=now_ms)
    processed: int = 0
    failed_count: int = 0
    throttled_count: int = 0
    in_flight: set[str] = field(default_factory=set)
    _pending: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=1_000))
    full: FullRedis = field(default_factory=lambda: FullRedis(log))
    """Writes refused because Redis is full, from this loop and the worker's errors alike (pool/redis_full.py)."""
    _counts: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    """(stats key suffix, counter, recent bucket) -> increments not yet written to Redis. The bucket is that
    of the time counted, so counts held back by an outage still land in the minutes they happened in."""
    _throttles: dict[str, _ThrottleWindow] = field(default_factory=dict)
    trail_every: float = TRAIL_EVERY
    _usage: _Usage = field(init=False)
    _trail_sent: tuple[int, int] | None = None
    """The newest trail point Redis has: the trail (1.6 KB at 60 points) is rewritten only when one is added."""

    def __post_init__(self) -> None:
        self._usage = _Usage(self.trail_every)

    downstream: DownstreamCounts = field(default_factory=DownstreamCounts)
    """Requests to identity, Supabase, Stripe and PostgreSQL by outcome (`pool/downstream.py` records them)."""

    @property
    def heartbeat_key(self) -> str:
        return heartbeat_key(self.host, self.pid)

    # -- called from the dispatcher and handlers (never block) --------------------------------
    def event(self, kind: str, message: str, **fields: Any) -> None:
        record = {
            "ts": str(now_ms()),
            "kind": kind,
            "message": message,
            "queue": self.queue,
            "host": self.host,
            "pid": str(self.pid),
            "process": self.process_name,
        }
        record.update(
            {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items() if v is not None}
        )
        self._pending.append(record)

    def job_started(self, job_id: str) -> None:
        self.in_flight.add(str(job_id))

    def job_finished(self, job_id: str) -> None:
        self.in_flight.discard(str(job_id))

    def completed(self) -> None:
        self.processed += 1

    def count(self, counter: str, n: int = 1, *, scope: str | None = None) -> None:
        self._counts[(scope or self.queue, counter, int(time.time()) // RECENT_BUCKET_S)] += n

    def failed(self, spec: QueueSpec, job: Job, reason: str, *, final: bool) -> None:
        self.failed_count += 1
        self.count("failed" if final else "retries")
        self.event(
            "failed" if final else "retry",
            reason,
            jobId=str(job.id),
            name=job.name,
            attempt=str(job.attemptsMade + 1),
        )

    def throttled(self, spec: QueueSpec, job: Job, reason: str, retry_after: float) -> None:
        """First throttle of a window logs at once; repeats are counted and logged when it closes."""
        self.throttled_count += 1
        self.count("throttled")
        window = self._throttles.get(spec.name)
        if window is None:
            self._throttles[spec.name] = _ThrottleWindow(spec.throttle_line, time.monotonic())
            log.warning(
                "%s (job %s#%s, retry in %.1fs: %s)",
                spec.throttle_line,
                job.name,
                job.id,
                retry_after,
                reason,
            )
            self.event("throttled", spec.throttle_line, jobId=str(job.id), name=job.name, count="1")
        else:
            window.count += 1
            window.until = now_ms()
            window.since = window.since or window.until

    def close_throttle_windows(self, *, force: bool = False) -> None:
        for queue, window in list(self._throttles.items()):
            if force or time.monotonic() - window.opened >= THROTTLE_WINDOW:
                del self._throttles[queue]
                if window.count:
                    secs = time.monotonic() - window.opened
                    log.warning("%s x%d more in the last %.0fs", window.line, window.count, secs)
                    self.event(
                        "throttled",
                        window.line,
                        count=str(window.count),
                        since=str(window.since),
                        until=str(window.until),
                    )

    # -- the background loop --------------------------------------------------------------------
    def heartbeat(self) -> Heartbeat:
        rss, cpu = self._usage.read()
        return {
            "host": self.host,
            "pid": self.pid,
            "queue": self.queue,
            "process": self.process_name,
            "concurrency": self.concurrency,
            "inFlight": sorted(self.in_flight),
            "processed": self.processed,
            "failed": self.failed_count,
            "throttled": self.throttled_count,
            "started": self.started,
            "lastBeat": now_ms(),
            "rss": rss,
            "cpu": cpu,
        }

    async def flush(self, redis: Redis) -> None:
        self.close_throttle_windows()
        batch = list(self._pending)
        counts = dict(self._counts)
        async with redis.pipeline(transaction=False) as pipe:
            for (scope, counter, bucket), n in counts.items():
                pipe.hincrby(stats_key(scope), counter, n)
                pipe.hincrby(recent_key(bucket), recent_field(scope, counter), n)
            for bucket in {bucket for _, _, bucket in counts}:
                pipe.expire(recent_key(bucket), RECENT_KEEP_S)
            downstream = self.downstream.write(pipe)
            pipe.sadd(QUEUES_REGISTRY, self.queue)
            sample = (
                5,
                bull_key(self.queue, "wait"),
                bull_key(self.queue, "prioritized"),
                bull_key(self.queue, "metrics", "completed"),
                bull_key(self.queue, "metrics", "failed"),
                recent_key(int(time.time()) // RECENT_BUCKET_S),
                self.queue,
                RECENT_KEEP_S,
            )
            at = len(pipe)
            pipe.evalsha(BACKLOG_SAMPLE_SHA, *sample)
            for record in batch:
                pipe.xadd(
                    EVENTS_STREAM,
                    cast("dict[FieldT, EncodableT]", record),
                    maxlen=EVENTS_MAXLEN,
                    approximate=True,
                )
            pipe.set(self.heartbeat_key, json.dumps(self.heartbeat()), ex=HEARTBEAT_TTL)
            trail_key, trail = rss_trail_key(self.heartbeat_key), self._usage.trail
            point = trail[-1] if trail else None
            if point is not None and point != self._trail_sent:
                pipe.set(trail_key, json.dumps([list(p) for p in trail]), ex=HEARTBEAT_TTL)
            else:
                pipe.expire(trail_key, HEARTBEAT_TTL)  # lives and dies with the beat
            self._trail_sent = None  # until this flush has landed: a failed one may have let the trail expire
            pipe.zadd(WORKERS_INDEX, {self.heartbeat_key: now_ms()})
            pipe.zremrangebyscore(WORKERS_INDEX, 0, now_ms() - HEARTBEAT_TTL * 1000)
            results = await pipe.execute(raise_on_error=False)
        if isinstance(results[at], NoScriptError):
            results[at] = await redis.eval(BACKLOG_SAMPLE, *sample)
        for result in results:  # as execute() would have raised, once every command has run
            if isinstance(result, Exception):
                raise result
        self._trail_sent = point
        for _ in batch:
            self._pending.popleft()
        self._counts.subtract(counts)
        self._counts = +self._counts  # drop the zeros
        self.downstream.written(downstream)

    async def run(self, redis: Redis, every: float = HEARTBEAT_EVERY) -> None:
        """Flush events and beat until cancelled; report losing and regaining Redis once each.

        The outage reported on recovery runs from the start of the first failed flush to the first successful
        one (not from when the failure was noticed, nor to the end of a backoff)."""
        down_since: float | None = None
        failures = 0
        last_beat = 0.0
        while True:
            if not self._pending and time.monotonic() - last_beat < every and down_since is None:
                await asyncio.sleep(0.5)
                continue
            attempt = time.monotonic()
            try:
                await asyncio.wait_for(self.flush(redis), timeout=10)
                last_beat = time.monotonic()
                episode = self.full.accepted()
                if episode is not None:
                    self.event(
                        "redis-full",
                        f"Redis refused writes (OOM) for {episode.seconds:.1f}s: maxmemory reached",
                        since=str(int(episode.since * 1000)),
                        until=str(now_ms()),
                        count=str(episode.refused),
                    )
                if down_since is not None:
                    outage = last_beat - down_since
                    log.warning("Redis connection recovered after %.1fs (%d failed checks)", outage, failures)
                    self.event(
                        "redis-recovered",
                        f"Redis connection recovered after {outage:.1f}s",
                        failures=str(failures),
                    )
                    down_since, failures = None, 0
                    continue  # deliver the recovery event now
            except (RedisError, OSError, TimeoutError) as error:
                if is_oom(error):  # Redis answers, but is full: not a connection failure
                    self.full.refused_write("the slot's heartbeat, counters and events are held", error)
                    await asyncio.sleep(max(0.0, RETRY_EVERY - (time.monotonic() - attempt)))
                    continue
                failures += 1
                if down_since is None:
                    down_since = attempt
                reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
                if (
                    failures & (failures - 1) == 0
                ):  # checks 1, 2, 4, 8, ...: the log backs off, retries do not
                    log.error("Redis connection failed (check %d): %s", failures, reason)
                if failures == 1:
                    self.event("redis-connection-error", f"Redis connection failed: {reason}")
                    self.count("connection_failures", scope="redis")
                await asyncio.sleep(max(0.0, RETRY_EVERY - (time.monotonic() - attempt)))

    async def retire(self, redis: Redis) -> None:
        """Last flush, then remove our heartbeat so ma-top stops counting us at once."""
        self.close_throttle_windows(force=True)
        try:
            await asyncio.wait_for(self.flush(redis), timeout=3)
            await asyncio.wait_for(
                redis.delete(self.heartbeat_key, rss_trail_key(self.heartbeat_key)), timeout=2
            )
            await asyncio.wait_for(redis.zrem(WORKERS_INDEX, self.heartbeat_key), timeout=2)
        except (RedisError, OSError, TimeoutError) as error:
            log.warning("could not retire heartbeat: %s", error)
