"""The shared, Textual-free data layer: one `fetch()` returns an immutable snapshot of the system.

Used by the Prometheus exporter and by ma-top. Every fetch costs O(1) in the number of jobs: one pipelined
round trip for every queue's counts, flags, metrics and counters, one for the oldest waiting jobs' times,
one for the heartbeats; INFO runs on a slower timer, and queue discovery (SCAN for `bull:*:meta`) reads one
bounded page per tick, so a pass over the keyspace is spread over ticks.

The client is made with decode_responses=True: the casts narrow redis-py's `bytes | str` replies to str.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from pool.contracts import (
    BULK_JOBS_KEY,
    BULL_PREFIX,
    DOWNSTREAMS,
    HEARTBEAT_TTL,
    JOB_STATES,
    LATENCY_HIST_KEY,
    LATENCY_KEY,
    QUEUES_REGISTRY,
    SCHEDULERS_SUFFIX,
    STATE_KEYS,
    WORKERS_INDEX,
    bull_key,
    downstream_key,
    downstream_scope,
    rss_trail_key,
    stats_key,
)
from pool.monitor import failure_growth
from pool.monitor.downstreams import DownstreamStats, parse
from pool.monitor.failure_growth import RecentFailures
from pool.monitor.rates import minute_series
from pool.monitor.recent import ask_recent, recent_from
from pool.monitor.schedulers import NextRuns, SchedulerBook, next_runs_of, read_schedulers
from pool.monitor.snapshot import (
    ActiveJob,
    BulkJob,
    QueueStats,
    RedisHealth,
    Snapshot,
    WorkerBeat,
    as_float,
    as_int,
    bulk_job_from,
    rss_trail,
)

SCAN_COUNT = 250
"""Keys one discovery SCAN page looks at (one page per tick): about 0.1 ms of Redis' time however large the
keyspace (1,000 would be 0.5 ms at a million keys: a sixth of a tick). A pass over N keys takes N / 250 ticks:
a test or dev keyspace in one to a few seconds, a million-job backlog in about an hour."""
FETCH_TIMEOUT_S = 2.0
"""A fetch that takes longer is a Redis down: a tick costs a few ms, so this is no answer, not a slow one."""
BULK_RECENT_S = 24 * 3600
BULK_MAX = 50
SPARK_MINUTES = 60
OLDEST_ACTIVE = 3
"""How many of each queue's oldest active jobs a fetch reads the start time of (a long-running job is among
them: BullMQ pushes a job onto the left of `active`, so the oldest are at the right end)."""


def _per_minute(meta: list[Any], points: list[str], now_ms: float) -> tuple[int, ...]:
    """`meta` is HMGET count, prevCount, prevTS of a BullMQ metrics hash."""
    count, prev_count, prev_ts = meta
    prev = as_int(prev_ts) if prev_ts else None
    return minute_series(
        as_int(count), as_int(prev_count), prev, [as_int(p) for p in points], now_ms, SPARK_MINUTES
    )


class Collector:
    def __init__(
        self,
        redis: Redis,
        known_queues: Iterable[str] = (),
        *,
        prefix: str = BULL_PREFIX,
        scan_count: int = SCAN_COUNT,
        info_every: float = 5.0,
        failures_every: float = 30.0,
        clock: Callable[[], float] | None = None,
        recent_window_s: float = 300.0,
        timeout_s: float = FETCH_TIMEOUT_S,
        schedulers_every: float = 10.0,
    ) -> None:
        """`clock` (epoch seconds) replaces Redis' TIME as the "now" the per-minute series and the oldest
        waiting age are measured from (tests move it forward). `recent_window_s`: how far back the counters'
        recent buckets are read (the findings' rate window). `timeout_s` bounds a whole fetch: a hung Redis
        (accepting connections, never answering) is reported down after it, not waited on."""
        self.recent_window_s = recent_window_s
        self._skew = 0.0
        """Redis' clock minus ours, from the last tick's TIME."""
        self.redis = redis
        self.clock = clock
        self.prefix = prefix
        self.known = tuple(known_queues)
        self.scan_count = scan_count
        self.info_every = info_every
        self.timeout_s = timeout_s
        self._queues: tuple[str, ...] = self.known
        self._registered: frozenset[str] = frozenset(self.known)
        self._cursor = 0
        self._pass: set[str] = set()
        """Queues found so far in the SCAN pass under way."""
        self._scanned: frozenset[str] = frozenset()
        """Queues found by the last whole SCAN pass."""
        self._info: RedisHealth = RedisHealth(up=False, error="not sampled yet")
        self._info_at = 0.0
        self._downstreams: tuple[DownstreamStats, ...] = ()
        self.failures_every = failures_every
        self._failures: tuple[RecentFailures, ...] = ()
        self._failures_at = -failures_every  # monotonic; the first fetch reads them
        self._failures_read_at = 0.0
        self._schedulers = SchedulerBook(schedulers_every)
        """The job schedulers' details (read when they change, else every `schedulers_every` seconds)."""
        self._next_runs: NextRuns = {}
        self._now_ms = 0.0
        """Redis' clock at the last tick's pipeline."""

    async def _discover_step(self) -> None:
        """Every BullMQ queue in Redis, not only ours, so a product queue with jobs and no workers shows up:
        each tick reads our registry (O(queues)) and one SCAN page for `bull:*:meta` (at most `scan_count`
        keys looked at) in one round trip. A full pass is spread over ticks, so the tick stays O(1) in jobs and
        a new queue shows within a few ticks in a small keyspace (keys / scan_count ticks in a large one); at the
        end of each pass, queues gone from Redis drop out."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.smembers(QUEUES_REGISTRY)
            pipe.scan(
                self._cursor,
                match=bull_key("*", "meta", prefix=self.prefix),
                count=self.scan_count,
                _type="hash",
            )
            registered, (cursor, keys) = await pipe.execute()
        self._registered = frozenset(cast(set[str], registered) | set(self.known))
        self._pass.update(cast(str, key)[len(self.prefix) + 1 : -len(":meta")] for key in keys)
        self._cursor = int(cursor)
        if self._cursor == 0:  # a whole pass done
            self._scanned, self._pass = frozenset(self._pass), set()
        self._queues = tuple(sorted(self._registered | self._scanned | self._pass))

    async def _health(self) -> RedisHealth:
        info = await self.redis.info()
        failures = as_int(await self.redis.hget(stats_key("redis"), "connection_failures"))
        return RedisHealth(
            up=True,
            used_memory=as_int(info.get("used_memory")),
            maxmemory=as_int(info.get("maxmemory")),
            not_counted_for_evict=as_int(info.get("mem_not_counted_for_evict")),
            clients=as_int(info.get("connected_clients")),
            ops_per_sec=as_int(info.get("instantaneous_ops_per_sec")),
            evicted_keys=as_int(info.get("evicted_keys")),
            policy=str(info.get("maxmemory_policy", "")),
            version=str(info.get("valkey_version") or info.get("redis_version") or ""),
            connection_failures=failures,
        )

    async def fetch(self) -> Snapshot:
        now = time.monotonic()
        errors: dict[str, str] = {}
        try:
            async with asyncio.timeout(self.timeout_s):
                snapshot = await self._fetch(now, errors)
        except (RedisError, OSError, TimeoutError) as error:
            if isinstance(error, TimeoutError) and not str(error):
                text = f"TimeoutError: no answer within {self.timeout_s:g}s"
            else:
                text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            errors["redis"] = text
            self._info = RedisHealth(up=False, error=text)
            self._info_at = 0.0  # INFO is read again as soon as Redis answers
            return Snapshot(time.time(), (), (), self._info, errors)
        if now - self._failures_at >= self.failures_every:
            await self._read_failures(now)
            snapshot = replace(
                snapshot, recent_failures=self._failures, failures_read_at=self._failures_read_at
            )
        if self._schedulers.due(self._next_runs, now):
            await self._read_schedulers(now)
            snapshot = replace(snapshot, schedulers=self._schedulers.current(self._next_runs, self._now_ms))
        return snapshot

    async def _read_schedulers(self, now: float) -> None:
        """The schedulers' hashes and runs, O(schedulers), under a timeout of their own like the failures read:
        on an error the last details stay (the next runs on screen are still this tick's)."""
        self._schedulers.reading(self._next_runs, now)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(self.timeout_s):
                found = await read_schedulers(self.redis, self._next_runs, self._now_ms, self.prefix)
            self._schedulers.keep(found)

    async def _read_failures(self, now: float) -> None:
        """The failed sets, on the slower timer and under a timeout of their own: a storm of failures makes
        this read heavy, and it must never make the snapshot (or Redis) read as down. On failure the last
        read stays and the next try waits a whole interval."""
        self._failures_at = now
        at = self._now()
        # on an error the last read's failures are kept: they still age out of the window by their own times
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(self.timeout_s * 2):
                self._failures = await failure_growth.recent_failures(
                    self.redis, self._queues, at, self.prefix
                )
            self._failures_read_at = at

    async def _fetch(self, now: float, errors: dict[str, str]) -> Snapshot:
        await self._discover_step()
        if now - self._info_at >= self.info_every:
            self._info, self._info_at = await self._health(), now
        queues = await self._queue_stats(self._queues)
        now_s = self._now()
        since = int(time.time() * 1000) - HEARTBEAT_TTL * 1000
        async with self.redis.pipeline(transaction=False) as pipe:  # one round trip for three reads
            pipe.zrangebyscore(WORKERS_INDEX, since, "+inf")
            pipe.hgetall(BULK_JOBS_KEY)
            ask_recent(pipe, now_s, self.recent_window_s)
            beat_keys, bulk_records, *buckets = await pipe.execute()
        workers = await self._workers(beat_keys)
        bulk = self._bulk_jobs(bulk_records)
        recent = recent_from(buckets, now_s, self.recent_window_s)
        per_queue: dict[str, int] = {}
        for beat in workers:
            per_queue[beat.queue] = per_queue.get(beat.queue, 0) + 1
        queues = tuple(
            QueueStats(
                **{**q.__dict__, "workers": per_queue.get(q.name, 0), "handled": q.name in self._registered}
            )
            for q in queues
        )
        return Snapshot(
            time.time(),
            queues,
            workers,
            self._info,
            errors,
            bulk,
            recent=recent,
            downstreams=self._downstreams,
            recent_failures=self._failures,
            failures_read_at=self._failures_read_at,
            schedulers=self._schedulers.current(self._next_runs, self._now_ms),
        )

    def _now(self) -> float:
        """Epoch seconds on Redis' clock (the clock the pool's buckets are aligned to, within NTP)."""
        return self.clock() if self.clock else time.time() + self._skew

    def _bulk_jobs(self, records: dict[str, str]) -> tuple[BulkJob, ...]:
        """The most recent bulk jobs (bounded: updated within a day, at most BULK_MAX) of BULK_JOBS_KEY's hash."""
        now = time.time()
        jobs = []
        for raw in records.values():
            job = bulk_job_from(raw)  # a malformed record must not hide the others
            if job is not None and now - job.updated_at <= BULK_RECENT_S:
                jobs.append(job)
        jobs.sort(key=lambda j: j.updated_at, reverse=True)
        return tuple(jobs[:BULK_MAX])

    async def _queue_stats(self, names: tuple[str, ...]) -> tuple[QueueStats, ...]:
        p = self.prefix

        def key(queue: str, *parts: str) -> str:
            return bull_key(queue, *parts, prefix=p)

        async with self.redis.pipeline(transaction=False) as pipe:
            # Now is Redis' clock, read in this same round trip: BullMQ's prevTS and the jobs' timestamps are
            # written by the workers and producers of this Redis, and every dashboard and the exporter then
            # agree on the minute, whatever the clock of the machine ma-top runs on (an on-call laptop).
            pipe.time()
            for q in names:
                for state in JOB_STATES:
                    suffix, kind = STATE_KEYS[state]
                    (pipe.llen if kind == "list" else pipe.zcard)(key(q, suffix))
                pipe.llen(key(q, "paused"))  # where older BullMQ versions keep a paused queue's waiting jobs
                pipe.hexists(key(q, "meta"), "paused")
                pipe.pttl(key(q, "limiter"))
                pipe.lindex(key(q, "wait"), -1)
                pipe.hmget(key(q, "metrics", "completed"), "count", "prevCount", "prevTS")
                pipe.hmget(key(q, "metrics", "failed"), "count", "prevCount", "prevTS")
                pipe.lrange(key(q, "metrics", "completed", "data"), 0, SPARK_MINUTES - 2)
                pipe.lrange(key(q, "metrics", "failed", "data"), 0, SPARK_MINUTES - 2)
                pipe.hgetall(stats_key(q))
            for q in names:
                pipe.lrange(key(q, "active"), -OLDEST_ACTIVE, -1)
            for q in names:  # the job schedulers' next runs (O(schedulers))
                pipe.zrange(key(q, SCHEDULERS_SUFFIX), 0, -1, withscores=True)
            for d in DOWNSTREAMS:
                pipe.hgetall(stats_key(downstream_scope(d)))
                pipe.hgetall(downstream_key(d))
            server_time, *replies = await pipe.execute()
        seconds, micros = server_time
        now_ms = self.clock() * 1000 if self.clock else as_int(seconds) * 1000 + as_int(micros) / 1000
        self._skew = now_ms / 1000 - time.time()
        minute_at = now_ms // 60_000 * 60.0
        per = 16
        rows = [replies[i * per : (i + 1) * per] for i in range(len(names))]
        actives: list[list[str]] = replies[len(names) * per : len(names) * (per + 1)]
        self._next_runs = next_runs_of(names, replies[len(names) * (per + 1) : len(names) * (per + 2)])
        self._now_ms = now_ms
        tail = replies[len(names) * (per + 2) :]
        self._downstreams = tuple(
            parse(d, tail[2 * i], tail[2 * i + 1], now_ms / 1000) for i, d in enumerate(DOWNSTREAMS)
        )
        oldest_ids = [row[10] for row in rows]
        stamps: list[Any] = []
        started: list[Any] = []
        if any(oldest_ids) or any(actives):
            async with self.redis.pipeline(transaction=False) as pipe:
                for q, job_id in zip(names, oldest_ids, strict=True):
                    pipe.hget(key(q, job_id), "timestamp") if job_id else pipe.echo("")
                for q, ids in zip(names, actives, strict=True):
                    for job_id in ids:
                        pipe.hmget(key(q, job_id), "processedOn", "name")
                stamps = await pipe.execute()
            stamps, started = stamps[: len(names)], stamps[len(names) :]
        result = []
        oldest_active: list[tuple[ActiveJob, ...]] = []
        replies_of_active = iter(started)
        for ids in actives:
            jobs = []
            for job_id in ids:
                processed_on, job_name = next(replies_of_active)
                if processed_on:  # gone or not yet marked between the reads: not running for long
                    running = max(0.0, (now_ms - as_int(processed_on)) / 1000)
                    jobs.append(ActiveJob(job_id, str(job_name or ""), running))
            oldest_active.append(tuple(sorted(jobs, key=lambda j: -j.running_s)))
        for i, (q, row) in enumerate(zip(names, rows, strict=True)):
            counts = dict(zip(JOB_STATES, map(as_int, row[:7]), strict=True))
            counts["waiting"] += as_int(row[7])
            stamp = as_int(stamps[i]) if stamps and stamps[i] else 0
            result.append(
                QueueStats(
                    name=q,
                    counts=counts,
                    paused=bool(row[8]),
                    rate_limited_ms=max(0, as_int(row[9])),
                    oldest_waiting_s=max(0.0, (now_ms - stamp) / 1000) if stamp else None,
                    completed_total=as_int(row[11][0]),
                    failed_total=as_int(row[12][0]),
                    completed_per_min=_per_minute(row[11], row[13], now_ms),
                    failed_per_min=_per_minute(row[12], row[14], now_ms),
                    counters={k: as_int(v) for k, v in row[15].items()},
                    minute_at=minute_at,
                    oldest_active=oldest_active[i],
                )
            )
        return tuple(result)

    async def _workers(self, keys: list[str]) -> tuple[WorkerBeat, ...]:
        """The beats (and RSS trails) of the heartbeat keys indexed in WORKERS_INDEX: one MGET."""
        if not keys:
            return ()
        beats = []
        raws = await self.redis.mget([*keys, *(rss_trail_key(k) for k in keys)])
        for raw, trail in zip(raws[: len(keys)], raws[len(keys) :], strict=True):
            if not raw:
                continue  # expired between the two reads: that worker is gone
            b = json.loads(raw)
            beats.append(
                WorkerBeat(
                    b["host"],
                    b["pid"],
                    b["queue"],
                    b.get("process", ""),
                    b.get("concurrency", 0),
                    tuple(b.get("inFlight", ())),
                    b.get("processed", 0),
                    b.get("failed", 0),
                    b.get("throttled", 0),
                    b.get("started", 0),
                    b.get("lastBeat", 0),
                    as_int(b.get("rss")),
                    as_float(b.get("cpu")),
                    rss_trail(json.loads(trail) if trail else b.get("rssTrail")),  # older pools: in the beat
                )
            )
        return tuple(beats)

    async def latency_samples(self, limit: int = 1000) -> list[dict[str, Any]]:
        return [json.loads(s) for s in await self.redis.lrange(LATENCY_KEY, 0, limit - 1)]

    async def latency_histogram(self) -> dict[str, int]:
        hist = cast(dict[str, str], await self.redis.hgetall(LATENCY_HIST_KEY))
        return {k: as_int(v) for k, v in hist.items()}
