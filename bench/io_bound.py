"""I/O-bound jobs: one `ma-worker run` process at concurrency C, each job a 20 ms await, against Little's law.

With C lanes each holding a job for 0.02 s, no pool can finish more than C / 0.02 jobs a second (Little's law);
what a pool loses below that bound is its own time between jobs (fetch, dispatch, completion). N jobs are added
to a paused queue, the process starts (the full dispatch: validation, telemetry, the per-job log line), the queue
is resumed and the clock runs until wait and active are empty.

The pool runs on each event loop in turn (MA_EVENT_LOOP uvloop, the default, and asyncio), once without
auto-pipelining (`pooled`, MA_REDIS_AUTOPIPELINE=0), and once with awaits that vary as real I/O does (`spread`,
against C / their mean; information). For comparison, one Node BullMQ worker process at the same concurrency
awaits the same 20 ms (tests/node/bench_worker.mjs): what the platform's own workers reach. The bare reference,
in the same run and interleaved with the pool's rounds: C asyncio tasks in one process doing nothing but the
same 20 ms await N / C times each: what this machine's timers and scheduler allow at all. The pool process's
CPU per job is reported too (a pool short of the bound with a core to spare waits on Redis, not on itself), and
Valkey's time in scripts per job. One traced round with identical awaits and one with varied ones take a lane's
cycle apart (`cycle`).

Budget (issue 18): pool (default loop) >= 0.9x of C / 0.02 s (median of rounds) at each concurrency measured:
10 (the queue table's default lanes per process), 20 (its largest) and 50; the rest is information.

    .venv/bin/python bench/io_bound.py [--concurrency 10,20,50] [--seconds 4] [--rounds 6 (the kinds)]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bullmq import Queue
from redis.asyncio import Redis

from bench.tables import IO_SECONDS
from devstack import engines

Q = "bench"
BUDGET = 0.9
KINDS = ["uvloop", "asyncio", "pooled", "node", "spread", "bare"]
"""Each round runs every kind once, in an order that rotates from round to round."""
SPREAD_MS = (18, 22)
SPREAD_SEED = 18
"""The spread round: each job awaits a whole number of milliseconds in SPREAD_MS (uniform, drawn with this seed,
the same in every round; uvloop runs timers in whole milliseconds anyway); its bound is C / their mean."""
BURST_GAP_MS = 1.0
"""Job starts with less than this between one and the next belong to one burst (`cycle`): a run of starts
without a pause, in which each lane waited for those before it."""

BARE = """
import asyncio, sys, time
async def lane(n):
    for _ in range(n):
        await asyncio.sleep(float(sys.argv[3]))
async def main(c, n):
    started = time.perf_counter()
    await asyncio.gather(*(lane(n // c) for _ in range(c)))
    print(n // c * c / (time.perf_counter() - started))
asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""
"""The bare reference: a fresh interpreter, as the pool's is, on the standard loop."""


def spread_awaits(jobs: int) -> list[float]:
    """The spread round's awaits in seconds, one a job."""
    draw = random.Random(SPREAD_SEED)
    return [draw.randint(*SPREAD_MS) / 1000 for _ in range(jobs)]


async def script_us(redis: Redis) -> int:
    """Valkey's microseconds in scripts so far (EVALSHA: bullmq's, and the pool's telemetry one; the commands
    they run included)."""
    stats = (await redis.info("commandstats")).get("cmdstat_evalsha", {})
    return int(stats.get("usec", 0))


async def pool_round(
    redis: Redis,
    url: str,
    kind: str,
    concurrency: int,
    jobs: int,
    work: Path,
    trace: bool = False,
    awaits: list[float] | None = None,
) -> tuple[float, float, float]:
    """(jobs/s, the pool process's CPU microseconds per job, Valkey's microseconds in scripts per job) for `kind`:
    an event loop, `pooled` (the default loop with a pooled Redis connection per command instead of
    auto-pipelining) or `spread` (the default loop). `awaits`: each job's await in seconds (else 20 ms).
    `trace`: the jobs return when their await began and ended and are kept, for `cycle` (not timed with the
    rounds: that is more work)."""
    await redis.flushdb()
    queue = Queue(Q, {"connection": redis})
    await queue.pause()
    job = {"opts": {"removeOnComplete": False}, "data": {"trace": True}} if trace else {"data": {}}
    data = [{**job["data"], "i": i} for i in range(jobs)]
    for one, seconds in zip(data, awaits or (), strict=False):
        one["s"] = seconds
    for at in range(0, jobs, 5000):
        await queue.addBulk([{"name": "io", **job, "data": one} for one in data[at : at + 5000]])
    log = work / "pool.log"
    log.write_text("")
    env = {
        **os.environ,
        "REDIS_URL": url,
        "DATABASE_URL": "postgresql://bench@127.0.0.1:9/none",
        "TASKS_DATABASE_URL": "postgresql://bench@127.0.0.1:9/none",
        "IDENTITY_BASE_URL": "http://127.0.0.1:9",
        "SUPABASE_SERVICE_ROLE_KEY": "bench-service-role-key-0000",
        "MA_QUEUE_TABLE": "bench.tables:IO",
        "BENCH_CONCURRENCY": str(concurrency),
        "MA_EVENT_LOOP": "uvloop" if kind in ("pooled", "spread") else kind,
        "MA_REDIS_AUTOPIPELINE": "0" if kind == "pooled" else "1",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("PYTHONUNBUFFERED", None)  # as supervisord runs the pool: the log flushed once per loop turn
    if kind == "node":
        argv = ["node", "bench_worker.mjs", url, Q, str(concurrency), str(round(IO_SECONDS * 1000))]
        cwd = ROOT / "tests" / "node"
    else:
        argv, cwd = [str(Path(sys.executable).parent / "ma-worker"), "run", Q], ROOT
    with open(log, "a") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while "consuming bench" not in (text := log.read_text()) and "ready" not in text:
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-2000:]
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            cpu = psutil.Process(proc.pid)
            cpu_before = sum(cpu.cpu_times()[:2])
            valkey_before = await script_us(redis)
            started = time.perf_counter()
            await queue.resume()
            while await redis.llen(f"bull:{Q}:wait") or await redis.llen(f"bull:{Q}:active"):
                await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - started
            valkey_after = await script_us(redis)
            return (
                jobs / elapsed,
                (sum(cpu.cpu_times()[:2]) - cpu_before) / jobs * 1e6,
                (valkey_after - valkey_before) / jobs,
            )
        finally:
            proc.terminate()
            proc.wait(30)


def bare_round(concurrency: int, jobs: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", BARE, str(concurrency), str(jobs), str(IO_SECONDS)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


async def cycle(
    redis: Redis, url: str, concurrency: int, jobs: int, work: Path, awaits: list[float] | None = None
) -> dict[str, float]:
    """Where a lane's time goes between two jobs, from one traced round of the pool (default loop; `awaits` as
    `pool_round`'s): mean ms of
    - `await`: the job's own await as the event loop ran it (its timer's lateness included);
    - `completion_to_next_start`: from the completing call (`moveToFinished`, which fetches the next job; its
      timestamp becomes the next job's `processedOn`) to the next job's handler starting: the Redis round trip
      with the scripts of every lane that completed in the same turn, the reply's decoding and the dispatch;
    - `end_to_completion`: from the await's end to that completing call (the result, the log line, telemetry).
    Their sum is the lane's cycle (C / jobs/s of that round).

    And why the round trip grows with C. Lanes whose awaits end in the same turn complete one after another,
    wait for Redis together and start their next jobs one after another; with identical awaits, lanes started
    in the same millisecond (uvloop's timers are whole milliseconds) time out in the same turn again, and
    nothing splits them up. So lanes move in bursts (`lanes_per_burst`: the mean size of the burst a job
    started in; see BURST_GAP_MS). Valkey runs one script at a time and the worker one job's work at a time:
    the job k-th to start in its burst waited for about k jobs' scripts, its own included (`valkey_script_us`:
    Valkey's time in scripts per job in this round), and about k jobs' worth of the worker's CPU
    (`worker_cpu_us`, this round's). `valkey_queue_ms` and `worker_queue_ms` are those waits on average; the two
    run at the same time on two CPUs, so they overlap in the round trip rather than add up."""
    _, worker, script = await pool_round(
        redis, url, "spread" if awaits else "uvloop", concurrency, jobs, work, trace=True, awaits=awaits
    )
    keys = [key async for key in redis.scan_iter(f"bull:{Q}:[0-9]*", count=1000)]
    pipe = redis.pipeline()
    for key in keys:
        pipe.hmget(key, "processedOn", "finishedOn", "returnvalue")
    rows = []
    for processed, finished, value in await pipe.execute():
        if processed and finished and value and value != "null":
            stamps = json.loads(value)
            rows.append((int(processed), int(finished), stamps["began"], stamps["ended"]))
    starts = sorted(began for _, _, began, _ in rows)
    bursts = [1]
    for before, after in itertools.pairwise(starts):
        if after - before < BURST_GAP_MS:
            bursts[-1] += 1
        else:
            bursts.append(1)
    lanes_per_burst = sum(n * n for n in bursts) / len(starts)
    mean_place = (lanes_per_burst + 1) / 2  # a job's mean place in its burst: sum of n(n+1)/2, over the jobs
    return {
        "jobs": len(rows),
        "await_ms": round(statistics.mean(e - b for _, _, b, e in rows), 2),
        "completion_to_next_start_ms": round(statistics.mean(b - p for p, _, b, _ in rows), 2),
        "end_to_completion_ms": round(statistics.mean(f - e for _, f, _, e in rows), 2),
        "lanes_per_burst": round(lanes_per_burst, 1),
        "valkey_script_us": round(script, 1),
        "valkey_queue_ms": round(mean_place * script / 1000, 2),
        "worker_cpu_us": round(worker, 1),
        "worker_queue_ms": round(mean_place * worker / 1000, 2),
    }


async def main(concurrency: int, seconds: float, rounds: int) -> dict:
    bound = concurrency / IO_SECONDS
    jobs = int(bound * seconds)
    work = Path(tempfile.mkdtemp(prefix="ma-bench-io-"))
    valkey = engines.valkey(work / "valkey", persistent=False).start()
    redis = Redis.from_url(valkey.url, decode_responses=True)
    awaits = spread_awaits(jobs)
    rates: dict[str, list[float]] = {kind: [] for kind in KINDS}
    cpu: dict[str, list[float]] = {kind: [] for kind in KINDS if kind != "bare"}
    scripts: list[float] = []
    try:
        for n in range(rounds):
            for kind in KINDS[n % len(KINDS) :] + KINDS[: n % len(KINDS)]:  # rotating order
                if kind == "bare":
                    rates[kind].append(bare_round(concurrency, jobs))
                    continue
                rate, us, script = await pool_round(
                    redis,
                    valkey.url,
                    kind,
                    concurrency,
                    jobs,
                    work,
                    awaits=awaits if kind == "spread" else None,
                )
                rates[kind].append(rate)
                cpu[kind].append(us)
                if kind == "uvloop":
                    scripts.append(script)
            print(
                f"  round {n + 1}: "
                + ", ".join(f"{k} {v[-1]:.0f} jobs/s" for k, v in rates.items())
                + f" (bound {bound:.0f}/s); pool CPU "
                + ", ".join(f"{k} {v[-1]:.0f} us/job" for k, v in cpu.items())
                + f"; Valkey's scripts {scripts[-1]:.0f} us/job (uvloop)",
                file=sys.stderr,
            )
        lane = await cycle(redis, valkey.url, concurrency, jobs, work)
        print(f"  a lane's cycle (ms, one traced round): {lane}", file=sys.stderr)
        spread_lane = await cycle(redis, valkey.url, concurrency, jobs, work, awaits)
        print(f"  the same with varied awaits: {spread_lane}", file=sys.stderr)
    finally:
        await redis.aclose()
        valkey.stop()
    spread_bound = concurrency / statistics.mean(awaits)
    pool, bare = statistics.median(rates["uvloop"]), statistics.median(rates["bare"])
    stock = statistics.median(rates["asyncio"])
    ratio = pool / bound
    return {
        "benchmark": "I/O-bound jobs (20 ms await) vs Little's law",
        "concurrency": concurrency,
        "jobs": jobs,
        "rounds": rounds,
        "bound_jobs_per_s": round(bound),
        "pool_jobs_per_s": round(pool),
        "bare_jobs_per_s": round(bare),
        "asyncio_jobs_per_s": round(stock),
        "asyncio_vs_bound": round(stock / bound, 3),
        "pool_cpu_us_per_job": round(statistics.median(cpu["uvloop"]), 1),
        "valkey_script_us_per_job": round(statistics.median(scripts), 1),
        "asyncio_cpu_us_per_job": round(statistics.median(cpu["asyncio"]), 1),
        "pooled_jobs_per_s": round(statistics.median(rates["pooled"])),
        "pooled_vs_bound": round(statistics.median(rates["pooled"]) / bound, 3),
        "pooled_cpu_us_per_job": round(statistics.median(cpu["pooled"]), 1),
        "node_jobs_per_s": round(statistics.median(rates["node"])),
        "node_vs_bound": round(statistics.median(rates["node"]) / bound, 3),
        "node_cpu_us_per_job": round(statistics.median(cpu["node"]), 1),
        "spread_jobs_per_s": round(statistics.median(rates["spread"])),
        "spread_vs_bound": round(statistics.median(rates["spread"]) / spread_bound, 3),
        "spread_ms": list(SPREAD_MS),
        "spread_cycle_ms": spread_lane,
        "ratio_vs_bound": round(ratio, 3),
        "bare_vs_bound": round(bare / bound, 3),
        "pool_vs_bare": round(
            statistics.median(p / b for p, b in zip(rates["uvloop"], rates["bare"], strict=True)), 3
        ),
        "cycle_ms": lane,
        "budget": BUDGET,
        "ok": ratio >= BUDGET,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--concurrency",
        default="10,20,50",
        help="comma-separated; each measured on its own (default: the queue table's default lanes, its largest, 50)",
    )
    parser.add_argument(
        "--seconds", type=float, default=4.0, help="jobs per round: the bound's jobs/s x this"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=len(KINDS),
        help="each kind runs once in each place of the rotating order (3 rounds left the median to one noisy round)",
    )
    args = parser.parse_args()
    sweep = [asyncio.run(main(int(c), args.seconds, args.rounds)) for c in args.concurrency.split(",")]
    report = {**sweep[-1], "sweep": sweep, "ok": all(r["ok"] for r in sweep)}
    print(json.dumps(report))
    sys.exit(0 if report["ok"] else 1)
