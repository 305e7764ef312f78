"""The soak: many mixed jobs through the whole stack (tests/support/loadstack.py) with the exporter scraped and
`ma-top --once --json` run on a timer, sampling each supervisord program's RSS and Redis connections; afterwards
every key in Redis is scanned and classified, so a leak (a `bull:*` key beyond retention, an `ma:*` key with
neither a TTL nor a cap) is named. Shared by bench/soak.py (1,000,000 jobs) and tests/test_soak.py (20,000).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
from redis.asyncio import Redis

from pool import contracts
from pool.queue_table import QUEUES
from tests.support.loadstack import LoadStack, add_jobs, backlog, paid_invoice
from tests.support.mix import Mix
from tests.support.paths import BIN, ROOT
from tests.support.waits import wait_for

BACKLOG_CAP = 2_000
"""The producer keeps the backlog under this: the pool runs at its capacity, Redis holds a bounded backlog."""
WARM_UP = 0.1
APPROXIMATE_TRIM_SLACK = 100
"""`XADD ... MAXLEN ~ cap` trims whole macro nodes only: a stream stays between its cap and the cap plus
`stream-node-max-entries` (100 by default). A leak grows without bound, far past that."""
POOL_EXTRA = 6
"""pool/runtime.py: a slot's pooled Redis client holds at most its queue's concurrency + 6 connections."""
FIXED_CONNECTIONS = 2
"""Besides that pool: bullmq's blocking connection and the health probe (pool/runtime.py)."""
"""The first tenth of the jobs is warm-up: no RSS slope is taken over it."""

# Queue-level BullMQ keys (`bull:<queue>:<part>`): one each per queue whatever the number of jobs.
QUEUE_PARTS = {
    "wait",
    "paused",
    "active",
    "delayed",
    "prioritized",
    "completed",
    "failed",
    "waiting-children",
    "meta",
    "events",
    "id",
    "marker",
    "pc",
    "stalled",
    "stalled-check",
    "limiter",
    "metrics:completed",
    "metrics:completed:data",
    "metrics:failed",
    "metrics:failed:data",
    contracts.SCHEDULERS_SUFFIX,
}
# `ma:*` keys with no TTL and the cap that bounds each (None: a fixed set of fields, or members trimmed by writers).
MA_CAPPED: dict[str, int | None] = {
    contracts.EVENTS_STREAM: contracts.EVENTS_MAXLEN,
    contracts.AUDIT_STREAM: contracts.AUDIT_MAXLEN,
    contracts.WORKERS_INDEX: None,
    contracts.QUEUES_REGISTRY: None,
    contracts.BULK_JOBS_KEY: contracts.BULK_JOBS_KEEP,
    contracts.LATENCY_KEY: None,
    contracts.LATENCY_HIST_KEY: None,
}


@dataclass
class Sample:
    at: float
    done: int
    rss: dict[str, int]
    connections: dict[str, int]


@dataclass
class Soak:
    stack: LoadStack
    jobs: int
    samples: list[Sample] = field(default_factory=list)
    top_runs: int = 0
    top_failures: list[str] = field(default_factory=list)
    scrapes: int = 0
    scrape_failures: list[str] = field(default_factory=list)
    added: int = 0

    def processes(self) -> dict[str, int]:
        """`group:name` -> pid of every RUNNING supervisord program (the pools and the exporter)."""
        return {
            f"{p['group']}:{p['name']}": p["pid"]
            for p in self.stack.sup.processes()
            if p["statename"] == "RUNNING"
        }

    def sample(self, done: int) -> None:
        rss, conns = {}, {}
        port = int(self.stack.valkey.url.rsplit(":", 1)[1].split("/")[0])
        for name, pid in self.processes().items():
            try:
                proc = psutil.Process(pid)
                rss[name] = proc.memory_info().rss
                conns[name] = sum(
                    1
                    for c in proc.net_connections(kind="tcp")
                    if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
                )
            except psutil.NoSuchProcess:
                continue
        self.samples.append(Sample(time.time(), done, rss, conns))

    async def top_and_exporter(self) -> None:
        """What an on-call engineer runs alongside: `ma-top --once --json` and a scrape of the exporter."""
        sock = f"unix://{self.stack.sup.home}/var/supervisor.sock"
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "ma-top"),
            "--once",
            "--json",
            "--supervisor",
            sock,
            "--redis-url",
            self.stack.valkey.url,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ},
        )
        out, err = await proc.communicate()
        self.top_runs += 1
        if proc.returncode != 0:
            self.top_failures.append(err.decode()[-300:])
        else:
            json.loads(out)
        async with httpx.AsyncClient() as client:
            self.scrapes += 1
            try:
                answer = await client.get(f"http://127.0.0.1:{self.stack.exporter_port}/metrics", timeout=10)
                if answer.status_code != 200:
                    self.scrape_failures.append(str(answer.status_code))
            except httpx.HTTPError as error:
                self.scrape_failures.append(repr(error))

    async def watch(self) -> None:
        """ma-top and the exporter's scrape every 10 s, beside the producer."""
        while True:
            await self.top_and_exporter()
            await asyncio.sleep(10)  # the on-call engineer's refresh

    async def run(self, progress: bool = False) -> dict[str, Any]:
        mix = Mix(seed=23)
        await mix.prepare(self.stack.urls.admin)
        mix.invoice = await paid_invoice(self.stack.valkey.url, self.stack.urls.admin, mix)
        redis = self.stack.redis()
        try:
            await drained(redis)
            memory_before = await used_memory(redis)
            keys_before = await redis.dbsize()
            started = time.monotonic()
            last_sample = 0.0
            watcher = asyncio.create_task(self.watch())
            while True:
                now_backlog = sum((await backlog(redis)).values())
                done = self.added - now_backlog
                if time.monotonic() - last_sample >= 5:
                    last_sample = time.monotonic()
                    await asyncio.to_thread(self.sample, done)
                    if progress:
                        print(
                            f"{time.monotonic() - started:7.0f} s: {done} done, backlog {now_backlog}",
                            flush=True,
                        )
                if self.added >= self.jobs and now_backlog == 0:
                    break
                if self.added < self.jobs and now_backlog < BACKLOG_CAP:
                    batch = mix.jobs(min(1_000, self.jobs - self.added))
                    await mix.insert_rows(self.stack.urls.admin)
                    await add_jobs(redis, batch)
                    self.added += len(batch)
                else:
                    await asyncio.sleep(0.2)  # the producer's pace: the pool drains the backlog meanwhile
            loaded_s = time.monotonic() - started
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await asyncio.to_thread(self.sample, self.added)
            await asyncio.sleep(12)  # the pools' last telemetry flush and heartbeats land
            keys = await classify_keys(redis)
            memory_after = await used_memory(redis)
            failed = sum([await redis.zcard(contracts.bull_key(q, "failed")) for q in QUEUES])
            keys_after = await redis.dbsize()
        finally:
            await redis.aclose()
        return {
            "benchmark": "soak",
            "jobs": self.added,
            "seconds_loaded": round(loaded_s),
            "jobs_per_s": round(self.added / loaded_s, 1),
            "failed_jobs": failed,
            **rss_figures(self.samples),
            **connection_figures(self.samples),
            "redis_used_mb_before": round(memory_before / 2**20, 1),
            "redis_used_mb_after": round(memory_after / 2**20, 1),
            "keys_before": keys_before,
            "keys_after": keys_after,
            "keys": keys["counts"],
            "leaked_keys": len(keys["leaks"]),
            "leaks": keys["leaks"][:20],
            "top_runs": self.top_runs,
            "top_failures": len(self.top_failures),
            "exporter_scrapes": self.scrapes,
            "exporter_failures": len(self.scrape_failures),
        }


async def used_memory(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


async def drained(redis: Redis, timeout: float = 120) -> None:
    async def empty() -> bool:
        return sum((await backlog(redis)).values()) == 0

    await wait_for(empty, timeout=timeout, what="an empty backlog before the soak", every=0.5)


def rss_figures(samples: list[Sample]) -> dict[str, Any]:
    """Per process: RSS growth over the second half of the run (after warm-up) and the slope per 100k jobs."""
    if len(samples) < 4:
        return {"rss_growth_second_half_pct_max": None, "rss_worst": None, "rss": {}}
    end = samples[-1].done
    warm = [s for s in samples if s.done >= WARM_UP * end]
    half = [s for s in samples if s.done >= end / 2]
    per: dict[str, Any] = {}
    for name in samples[-1].rss:
        first = next((s.rss[name] for s in half if name in s.rss), None)
        last = samples[-1].rss[name]
        points = [(s.done, s.rss[name]) for s in warm if name in s.rss]
        slope = None
        if len({d for d, _ in points}) > 1:
            slope = statistics.linear_regression([d for d, _ in points], [r for _, r in points]).slope
        per[name] = {
            "rss_mb_end": round(last / 2**20, 1),
            "growth_second_half_pct": round((last - first) / first * 100, 2) if first else None,
            "slope_mb_per_100k_jobs": None if slope is None else round(slope * 100_000 / 2**20, 2),
        }
    worst = max(per, key=lambda n: per[n]["growth_second_half_pct"] or 0)
    return {
        "rss_growth_second_half_pct_max": per[worst]["growth_second_half_pct"],
        "rss_worst": worst,
        "rss": per,
    }


def connection_bound(program: str) -> int | None:
    """The most Redis connections a slot of `program` (`queue:queue_00`) can hold; None for other programs."""
    spec = QUEUES.get(program.split(":", 1)[0])
    return None if spec is None else spec.concurrency + POOL_EXTRA + FIXED_CONNECTIONS


def connection_figures(samples: list[Sample]) -> dict[str, Any]:
    """Per process: Redis connections (min, max) after warm-up, and whether they are stable: the second half held
    no more than the first, or stayed within what the slot's bounded pool can hold (a pool's connections plateau at
    its lanes, and a rare peak of concurrent pipelines may reach a higher plateau late; a leak keeps growing, past
    any bound)."""
    end = samples[-1].done if samples else 0
    warm = [s for s in samples if s.done >= WARM_UP * end]
    per: dict[str, Any] = {}
    for name in samples[-1].connections if samples else {}:
        values = [s.connections[name] for s in warm if name in s.connections]
        mid = len(values) // 2
        bound = connection_bound(name)
        per[name] = {
            "min": min(values),
            "max": max(values),
            "bound": bound,
            "stable": not values[mid:]
            or max(values[mid:]) <= max(values[: mid or 1])
            or (bound is not None and max(values) <= bound),
        }
    return {
        "connections": per,
        "connections_max_per_process": max((p["max"] for p in per.values()), default=0),
        "connections_range": [
            min((p["min"] for p in per.values()), default=0),
            max((p["max"] for p in per.values()), default=0),
        ],
        "connections_stable": all(p["stable"] for p in per.values()),
    }


async def classify_keys(redis: Redis) -> dict[str, Any]:
    """Every key, by kind; `leaks`: job hashes no state holds, job sub-keys of a job gone, queue structures past
    their retention, and `ma:*` keys with neither a TTL nor a known cap (or past it)."""
    counts: dict[str, int] = {}
    leaks: list[str] = []
    members: dict[str, set[str]] = {}
    for q in QUEUES:
        held: set[str] = set()
        for state in ("wait", "paused", "active"):
            held |= set(await redis.lrange(contracts.bull_key(q, state), 0, -1))
        for state in ("delayed", "prioritized", "completed", "failed", "waiting-children"):
            held |= set(await redis.zrange(contracts.bull_key(q, state), 0, -1))
        members[q] = held
        spec = QUEUES[q]
        if await redis.zcard(contracts.bull_key(q, "completed")) > spec.keep_completed["count"]:
            leaks.append(f"bull:{q}:completed beyond keep_completed")
        if await redis.zcard(contracts.bull_key(q, "failed")) > spec.keep_failed["count"]:
            leaks.append(f"bull:{q}:failed beyond keep_failed")

    def count(kind: str) -> None:
        counts[kind] = counts.get(kind, 0) + 1

    async for key in redis.scan_iter(match="*", count=1_000):
        if key.startswith("bull:"):
            _, queue, rest = key.split(":", 2)
            if queue not in QUEUES:
                count("bull: other queue")
            elif rest in QUEUE_PARTS or rest.startswith((f"{contracts.SCHEDULERS_SUFFIX}:", "de:")):
                count("bull: queue structure")
            elif rest in members[queue]:
                count("bull: job retained")
            elif ":" in rest and rest.rsplit(":", 1)[0] in members[queue]:
                count("bull: job sub-key")  # logs, lock, dependencies of a retained job
            elif rest.startswith("repeat:") and rest in members[queue]:
                count("bull: job retained")
            else:
                count("bull: LEAK")
                leaks.append(key)
        elif key.startswith("ma:"):
            ttl = await redis.ttl(key)
            if ttl > 0:
                count("ma: with TTL")
                continue
            base = key if key in MA_CAPPED else None
            if base is None and key.startswith(contracts.STATS_PREFIX):
                count("ma: stats (fixed counters)")
                continue
            if base is None:
                count("ma: LEAK (no TTL, no cap)")
                leaks.append(key)
                continue
            cap = MA_CAPPED[base]
            size = await key_size(redis, key)
            if cap is not None and size > cap + APPROXIMATE_TRIM_SLACK:
                leaks.append(f"{key} holds {size} > cap {cap}")
            count("ma: capped")
        else:
            count("other")
    return {"counts": counts, "leaks": leaks}


async def key_size(redis: Redis, key: str) -> int:
    kind = await redis.type(key)
    sizes = {
        "stream": redis.xlen,
        "list": redis.llen,
        "hash": redis.hlen,
        "set": redis.scard,
        "zset": redis.zcard,
    }
    return int(await sizes[kind](key)) if kind in sizes else 0
