"""bench/billing_day.py's measurement: one side's part of a stage (a round) on the running stack, the pool's (its
jobs added to the queue and timed from their hashes, its processes optionally sampled by py-spy) or the bare
reference's (bench/billing_bare.py), what it cost every part of the stack, and the figures of a stage's rounds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psutil
from bullmq import Queue
from redis.asyncio import Redis

from bench import spy
from bench.billing_bare import COMPONENTS, Bare, BareRun
from pool.contracts import bull_key, downstream_scope, stats_key
from pool.queue_table import QUEUES
from tests.support.loadstack import LoadStack, cpu_seconds

TIMEOUT_S = 1800.0


# -- the pool's side ------------------------------------------------------------------------------------------------
async def add(redis: Redis, queue: str, jobs: list[tuple[str, str, dict[str, Any]]]) -> None:
    """bullmq addBulk with the queue's options, as `ma-worker enqueue` and the Node producers add them; completed
    jobs are kept (not the queue's 1,000) for their timings."""
    q = Queue(queue, {"connection": redis})
    opts = {**QUEUES[queue].job_options(), "removeOnComplete": False}
    for at in range(0, len(jobs), 500):
        await q.addBulk(
            [
                {"name": name, "data": data, "opts": {**opts, "jobId": job_id}}
                for job_id, name, data in jobs[at : at + 500]
            ]
        )


async def finished(redis: Redis, queue: str, ids: list[str]) -> dict[str, list[Any]]:
    """id -> [processedOn, finishedOn, failedReason, returnvalue] once every job has finished (or the timeout)."""
    done: dict[str, list[Any]] = {}
    deadline = time.monotonic() + TIMEOUT_S
    while len(done) < len(ids):
        todo = [i for i in ids if i not in done]
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in todo:
                pipe.hmget(
                    bull_key(queue, job_id), "processedOn", "finishedOn", "failedReason", "returnvalue"
                )
            rows = await pipe.execute()
        for job_id, row in zip(todo, rows, strict=True):
            if row[1]:
                done[job_id] = row
        if len(done) < len(ids):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{queue}: {len(ids) - len(done)} job(s) not finished after {TIMEOUT_S:.0f} s"
                )
            await asyncio.sleep(0.25)
    return done


async def requests(stack: LoadStack) -> dict[str, Counter[str]]:
    stats = await asyncio.gather(
        asyncio.to_thread(stack.identity.stats), asyncio.to_thread(stack.stripe.stats)
    )
    return {"identity": Counter(stats[0]), "stripe": Counter(stats[1])}


async def statements(redis: Redis) -> int:
    return sum(int(v) for v in (await redis.hgetall(stats_key(downstream_scope("postgres")))).values())


METHODS = ("GET ", "POST ", "PUT ", "PATCH ", "DELETE ")


def per_job(counter: Counter[str], jobs: int) -> dict[str, float]:
    """Requests per route, per job (the doubles also count statuses and effects; only requests here)."""
    return {k: round(v / jobs, 2) for k, v in sorted(counter.items()) if v and k.startswith(METHODS)}


def pctl(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def stack_cpu(stack: LoadStack) -> dict[str, float]:
    """cpu_seconds of the stack, and of this process (the bare side; on the pool's side, its polling)."""
    me = psutil.Process().cpu_times()
    return {**cpu_seconds(stack), "bench process": me.user + me.system}


@dataclass
class Round:
    """One side's part of a stage in one round: what it cost every part of the stack."""

    jobs: int
    wall_s: float
    cpu: dict[str, float]
    requests: dict[str, Counter[str]]
    results: list[Any]
    failed: list[str]
    times: list[float] = field(default_factory=list)
    """The pool's job times (processedOn -> finishedOn)."""
    profile: Counter[str] = field(default_factory=Counter)
    bare: BareRun | None = None


class Watch:
    """CPU seconds of every part of the stack and the doubles' request counts, over one stretch."""

    def __init__(self, stack: LoadStack) -> None:
        self.stack = stack

    async def start(self) -> None:
        self.cpu0, self.req0 = stack_cpu(self.stack), await requests(self.stack)

    def stop_cpu(self) -> dict[str, float]:
        return {k: v - self.cpu0.get(k, 0.0) for k, v in stack_cpu(self.stack).items()}

    async def stop_requests(self) -> dict[str, Counter[str]]:
        return {d: c - self.req0[d] for d, c in (await requests(self.stack)).items()}


async def pool_round(
    stack: LoadStack, redis: Redis, queue: str, jobs: list[tuple[str, str, dict[str, Any]]], profile: bool
) -> Round:
    watch = Watch(stack)
    await watch.start()
    pids = [p["pid"] for p in stack.sup.processes() if p["group"] == queue and p["pid"]]
    sampling = spy.Sampling(pids, stack.home, f"{queue}-{time.time_ns()}") if profile else None
    started = time.time()
    with sampling or contextlib.nullcontext():
        await add(redis, queue, jobs)
        rows = await finished(redis, queue, [job_id for job_id, _, _ in jobs])
        cpu = watch.stop_cpu()
    return Round(
        len(jobs),
        max(int(r[1]) for r in rows.values()) / 1000 - started,
        cpu,
        await watch.stop_requests(),
        [json.loads(r[3]) if r[3] else None for r in rows.values()],
        [f"{i}: {r[2]}" for i, r in rows.items() if r[2] and not r[3]],
        times=[(int(r[1]) - int(r[0])) / 1000 for r in rows.values() if r[0]],
        profile=sampling.counts() if sampling else Counter(),
    )


async def bare_round(
    stack: LoadStack, bare: Bare, queue: str, jobs: list[tuple[str, str, dict[str, Any]]]
) -> Round:
    watch = Watch(stack)
    await watch.start()
    spec = QUEUES[queue]
    run = await bare.run(spec, jobs, spec.concurrency * spec.processes)
    cpu = watch.stop_cpu()
    return Round(len(jobs), run.wall_s, cpu, await watch.stop_requests(), run.results, run.failed, bare=run)


def common(rounds: list[Round]) -> dict[str, Any]:
    """What both sides report: time, jobs/s, CPU of every part of the stack, requests per job."""
    n, wall = sum(r.jobs for r in rounds), sum(r.wall_s for r in rounds)
    cpu: Counter[str] = Counter()
    req: dict[str, Counter[str]] = {}
    for r in rounds:
        cpu.update(r.cpu)
        for d, c in r.requests.items():
            req.setdefault(d, Counter()).update(c)
    failed = [f for r in rounds for f in r.failed]
    return {
        "jobs": n,
        "wall_s": round(wall, 2),
        "jobs_per_s": round(n / wall, 1),
        "failed": len(failed),
        "failed_sample": failed[:3],
        "cpu_s": {k: round(v, 2) for k, v in cpu.most_common() if v >= 0.05},
        "machine_busy": round(sum(cpu.values()) / (wall * (psutil.cpu_count() or 1)), 3),
        "requests_per_job": {d: per_job(c, n) for d, c in req.items()},
    }


def pool_figures(queue: str, rounds: list[Round], sql: int) -> dict[str, Any]:
    spec, times = QUEUES[queue], [t for r in rounds for t in r.times]
    lanes, wall = spec.concurrency * spec.processes, sum(r.wall_s for r in rounds)
    profile: Counter[str] = sum((r.profile for r in rounds), Counter())
    out = {
        **common(rounds),
        "job_ms_p50": round(statistics.median(times) * 1000, 1),
        "job_ms_p95": round(pctl(times, 0.95) * 1000, 1),
        "lanes": lanes,
        "occupancy": round(sum(times) / (wall * lanes), 3),
        "stage_pool_cpu_s": round(sum(r.cpu.get(queue, 0.0) for r in rounds), 2),
        "sql_per_job": round(sql / sum(r.jobs for r in rounds), 2),
    }
    return out | ({"cpu_profile": spy.shares(profile)} if profile else {})


def bare_figures(rounds: list[Round]) -> dict[str, Any]:
    runs = [r.bare for r in rounds if r.bare is not None]
    n, busy = sum(r.jobs for r in rounds), sum(r.busy_s for r in runs)
    seconds = {c: sum(r.seconds.get(c, 0.0) for r in runs) for c in COMPONENTS}
    shares = {c: round(seconds[c] / busy, 3) for c in COMPONENTS}
    return {
        **common(rounds),
        "job_ms_mean": round(busy / n * 1000, 1),
        "bench_cpu_s": round(sum(r.cpu.get("bench process", 0.0) for r in rounds), 2),
        "share_of_job_time": {**shares, "rest": round(1 - sum(shares.values()), 3)},
        "calls_per_job": {c: round(sum(r.calls.get(c, 0) for r in runs) / n, 2) for c in COMPONENTS},
    }
