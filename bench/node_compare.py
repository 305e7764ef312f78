"""The pool against Node BullMQ and raw bullmq-python, in the same run on the same Redis.

Throughput: N no-op jobs are added to a paused queue, two worker processes of one kind start (concurrency 10
each), the queue is resumed and the clock runs until wait and active are empty. Kinds: `node` (npm bullmq, as
the platform's Node workers), `raw` (bullmq-python as its README shows it), `pool` (`ma-worker run`: the full
dispatch with validation, telemetry and the per-job log line) and `pooled` (the pool without auto-pipelining,
MA_REDIS_AUTOPIPELINE=0: what that change is worth). In each round `node` and `pool` run back to back, in
alternating order (this machine's speed drifts by tens of percent within a minute, and raw bullmq-python's rounds
are four times as long), then the other two; the ratio is the median of per-round pool/node ratios, and their
quartiles are reported with it (one round's ratio spreads about 0.75-1.2 here: five rounds could not tell 0.95
from 1.0, hence nine by default).

The same with one process of `node` and of `pool` (information): a process's lanes then overlap their work with
Redis's only within it (pool/autopipeline.py, `eager`), as most queues run (numprocs 1).

Pickup latency: one process of `raw` and of `pool`, jobs added at 200/s carrying the producer's wall clock; the
handler records enqueue -> start. Alternating rounds of both kinds; the ratios are medians of per-round ratios
of p50 and of p99 (the milliseconds shown are over all rounds). The same again at 2,000 jobs/s (`--rate-high`),
where p99 is reported for both kinds (information, no budget).

Budgets (issue 18): pool >= 1.0x node throughput; pool pickup p50 <= 1.0x raw, p99 <= 1.0x raw at 200 jobs/s.

    .venv/bin/python bench/node_compare.py [--jobs 20000] [--rounds 9] [--rate 200] [--rate-high 2000] [--seconds 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bullmq import Queue
from redis.asyncio import Redis

from devstack import engines

Q = "bench"
BUDGET_THROUGHPUT, BUDGET_P50, BUDGET_P99 = 1.0, 1.0, 1.0
WARMUP_S = 1.0


def start(kind: str, url: str, log: Path) -> subprocess.Popen[str]:
    if kind == "node":
        argv = ["node", "bench_worker.mjs", url, Q, "10"]
        cwd = ROOT / "tests" / "node"
    elif kind == "raw":
        argv, cwd = [sys.executable, "bench/raw_worker.py", url, Q, "10"], ROOT
    else:
        argv, cwd = [str(Path(sys.executable).parent / "ma-worker"), "run", Q], ROOT
    env = {
        **os.environ,
        "REDIS_URL": url,
        "DATABASE_URL": "postgresql://bench@127.0.0.1:9/none",
        "TASKS_DATABASE_URL": "postgresql://bench@127.0.0.1:9/none",
        "IDENTITY_BASE_URL": "http://127.0.0.1:9",
        "SUPABASE_SERVICE_ROLE_KEY": "bench-service-role-key-0000",
        "MA_QUEUE_TABLE": "bench.tables:NOOP",
        "PYTHONPATH": str(ROOT),
        "MA_REDIS_AUTOPIPELINE": "0" if kind == "pooled" else "1",
    }
    # As supervisord runs the pool: stdout block-buffered, the log flushed once per loop turn (pool/logs.py);
    # unbuffered, every per-job line would be a write(2) of its own (raw_worker.py flushes its "ready" itself).
    env.pop("PYTHONUNBUFFERED", None)
    out = open(log, "a")  # noqa: SIM115 - the child's stdout (the pool's per-job lines land here)
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)


async def ready(log: Path, procs: list[subprocess.Popen[str]], want: int) -> None:
    deadline = time.monotonic() + 30
    while log.read_text().count("ready") + log.read_text().count("consuming bench") < want:
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), log.read_text()[-2000:]
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)


def stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


async def throughput(redis: Redis, url: str, kind: str, jobs: int, work: Path, processes: int = 2) -> float:
    await redis.flushdb()
    queue = Queue(Q, {"connection": redis})
    await queue.pause()
    for at in range(0, jobs, 5000):
        await queue.addBulk(
            [
                {"name": "noop", "data": {"i": i}, "opts": {"removeOnComplete": {"count": 0}}}
                for i in range(at, min(jobs, at + 5000))
            ]
        )
    log = work / f"{kind}.log"
    log.write_text("")
    procs = [start(kind, url, log) for _ in range(processes)]
    try:
        await ready(log, procs, processes)
        started = time.perf_counter()
        await queue.resume()
        while await redis.llen(f"bull:{Q}:wait") or await redis.llen(f"bull:{Q}:active"):
            await asyncio.sleep(0.005)
        return jobs / (time.perf_counter() - started)
    finally:
        stop(procs)


async def latency(redis: Redis, url: str, kind: str, rate: float, seconds: float, work: Path) -> list[float]:
    await redis.flushdb()
    log = work / f"{kind}-latency.log"
    log.write_text("")
    procs = [start(kind, url, log)]
    queue = Queue(Q, {"connection": redis})
    try:
        await ready(log, procs, 1)
        count = int(rate * (seconds + WARMUP_S))
        began = time.perf_counter()
        for i in range(count):
            await queue.add("pickup", {"t": time.time()}, {"removeOnComplete": {"count": 0}})
            pause = began + (i + 1) / rate - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
        deadline = time.monotonic() + 30
        while await redis.llen("bench:latency") < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        warm = int(
            rate * WARMUP_S
        )  # the first second of a fresh process (imports, first connections) is left out
        return sorted(float(x) for x in await redis.lrange("bench:latency", warm, -1))
    finally:
        stop(procs)


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


async def pickup_rounds(
    redis: Redis, url: str, rate: float, seconds: float, rounds: int, work: Path
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Alternating rounds of `raw` and `pool` at `rate`: all latencies per kind, and per-round pool/raw ratios."""
    lat: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {"p50": [], "p99": []}
    for n in range(rounds):  # alternating, like the throughput rounds: noise hits both kinds alike
        order = ("raw", "pool") if n % 2 == 0 else ("pool", "raw")
        got = {kind: await latency(redis, url, kind, rate, seconds / rounds, work) for kind in order}
        for kind, values in got.items():
            lat.setdefault(kind, []).extend(values)
        for p in (50, 99):
            ratios[f"p{p}"].append(pct(got["pool"], p) / pct(got["raw"], p))
        print(
            f"  pickup at {rate:.0f}/s round {n + 1}: "
            + "  ".join(f"{k} p50 {pct(v, 50):.2f} ms p99 {pct(v, 99):.2f} ms" for k, v in got.items()),
            file=sys.stderr,
        )
    for values in lat.values():
        values.sort()
    return lat, ratios


async def main(jobs: int, rounds: int, rate: float, rate_high: float, seconds: float) -> dict:
    work = Path(tempfile.mkdtemp(prefix="ma-bench-node-"))
    valkey = engines.valkey(work / "valkey", persistent=False).start()
    redis = Redis.from_url(valkey.url, decode_responses=True)
    rates: dict[str, list[float]] = {"node": [], "raw": [], "pool": [], "pooled": []}
    try:
        for n in range(rounds):
            pair = ["node", "pool"] if n % 2 == 0 else ["pool", "node"]
            for kind in [*pair, "raw", "pooled"]:
                rates[kind].append(await throughput(redis, valkey.url, kind, jobs, work))
            print(
                f"  round {n + 1}: " + "  ".join(f"{k} {v[-1]:.0f} jobs/s" for k, v in rates.items()),
                file=sys.stderr,
            )
        single: dict[str, list[float]] = {"node": [], "pool": []}
        for n in range(rounds):  # one process of each: the pool's lanes and Redis overlap only within it
            for kind in single if n % 2 == 0 else reversed(single):
                single[kind].append(await throughput(redis, valkey.url, kind, jobs, work, processes=1))
            print(
                f"  one process, round {n + 1}: "
                + "  ".join(f"{k} {v[-1]:.0f} jobs/s" for k, v in single.items()),
                file=sys.stderr,
            )
        lat_rounds = max(rounds, 5)
        lat, ratios = await pickup_rounds(redis, valkey.url, rate, seconds, lat_rounds, work)
        high, high_ratios = await pickup_rounds(redis, valkey.url, rate_high, seconds, lat_rounds, work)
    finally:
        await redis.aclose()
        valkey.stop()
    med = {k: statistics.median(v) for k, v in rates.items()}
    per_round = [p / nd for p, nd in zip(rates["pool"], rates["node"], strict=True)]  # in the order run
    ratio = statistics.median(per_round)
    quartiles = (
        statistics.quantiles(per_round, n=4, method="inclusive") if len(per_round) > 1 else [ratio] * 3
    )
    p50, p99 = statistics.median(ratios["p50"]), statistics.median(ratios["p99"])
    one = statistics.median(p / nd for p, nd in zip(single["pool"], single["node"], strict=True))
    return {
        "benchmark": "pool vs Node BullMQ and raw bullmq-python",
        "jobs": jobs,
        "rounds": rounds,
        "processes": 2,
        "node_jobs_per_s": round(med["node"]),
        "raw_jobs_per_s": round(med["raw"]),
        "pool_jobs_per_s": round(med["pool"]),
        "ratio_vs_node": round(ratio, 3),
        "ratio_vs_node_q1": round(quartiles[0], 3),
        "ratio_vs_node_q3": round(quartiles[2], 3),
        "ratio_vs_node_rounds": [round(r, 3) for r in per_round],
        "pooled_jobs_per_s": round(med["pooled"]),
        "pooled_vs_node": round(med["pooled"] / med["node"], 3),
        "raw_vs_node": round(med["raw"] / med["node"], 3),
        "one_process_node_jobs_per_s": round(statistics.median(single["node"])),
        "one_process_pool_jobs_per_s": round(statistics.median(single["pool"])),
        "one_process_ratio_vs_node": round(one, 3),
        "budget_vs_node": BUDGET_THROUGHPUT,
        "pickup_raw_p50_ms": round(pct(lat["raw"], 50), 3),
        "pickup_raw_p99_ms": round(pct(lat["raw"], 99), 3),
        "pickup_pool_p50_ms": round(pct(lat["pool"], 50), 3),
        "pickup_pool_p99_ms": round(pct(lat["pool"], 99), 3),
        "pickup_p50_ratio": round(p50, 3),
        "pickup_p99_ratio": round(p99, 3),
        "pickup_high_rate": rate_high,
        "pickup_high_raw_p99_ms": round(pct(high["raw"], 99), 3),
        "pickup_high_pool_p99_ms": round(pct(high["pool"], 99), 3),
        "pickup_high_p99_ratio": float(f"{statistics.median(high_ratios['p99']):.3g}"),  # may be ~1e-4
        "budget_p50": BUDGET_P50,
        "budget_p99": BUDGET_P99,
        "ok": ratio >= BUDGET_THROUGHPUT and p50 <= BUDGET_P50 and p99 <= BUDGET_P99,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--rate-high", type=float, default=2000.0)
    parser.add_argument(
        "--seconds", type=float, default=40.0, help="pickup-latency seconds per kind, over all rounds"
    )
    args = parser.parse_args()
    report = asyncio.run(main(args.jobs, args.rounds, args.rate, args.rate_high, args.seconds))
    print(json.dumps(report))
    sys.exit(0 if report["ok"] else 1)
