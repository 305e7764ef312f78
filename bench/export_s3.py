"""bulk.export of 1,000,000 users to S3 (moto's server mode, the dev stack's S3) against the same export to a local
file, in the same run: time ratio and the S3 worker's peak RSS.

Each round runs the export once into MA_EXPORT_DIR and once into MA_EXPORT_URL (a multipart upload), each in a
real `ma-worker run super-admin.bulk-job` process; the ratio is the median over rounds of (local-file seconds /
S3 seconds), so 1.0 means as fast as writing the file. Seconds are the job's own run time (processedOn ->
finishedOn); peak RSS is the S3 worker's kernel high-water mark (VmHWM) over all its rounds. The S3 server runs
on the same machine and shares its cores with PostgreSQL and the worker.

Budgets (issue: exports to S3): ratio >= 0.7, peak RSS <= 150 MB.

    .venv/bin/python bench/export_s3.py [--rows 1000000] [--rounds 3] [--format csv|jsonl] [--part-mib 8]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis.asyncio import Redis

from bench.export import Q, export_once, fill, vm_hwm_mb
from devstack import databases, engines
from devstack.s3_server import DEV_BUCKET, S3Server

BUDGET_RATIO, BUDGET_RSS_MB = 0.7, 150.0


def vm_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "ma-worker"), "run", Q],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


def stop(worker: subprocess.Popen[bytes]) -> None:
    worker.terminate()
    worker.wait(30)


async def main(rows: int, rounds: int, fmt: str, part_mib: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="ma-bench-export-s3-"))
    pg = engines.postgres(work / "pg", fast=True).start()
    valkey = engines.valkey(work / "valkey", persistent=False).start()
    s3 = S3Server(work / "s3.log").start()
    s3.create_bucket()
    redis = Redis.from_url(valkey.url, decode_responses=True)
    local_worker = s3_worker = None
    try:
        urls = await asyncio.to_thread(databases.bootstrap, pg.url)
        await fill(urls.admin, rows)
        env = {
            **os.environ,
            "REDIS_URL": valkey.url,
            "DATABASE_URL": urls.identity_ro,
            "TASKS_DATABASE_URL": urls.tasks,
            "IDENTITY_BASE_URL": "http://127.0.0.1:9",
            "SUPABASE_SERVICE_ROLE_KEY": "bench-key",
            "MA_EXPORT_DIR": str(work / "exports"),
            "PYTHONPATH": str(ROOT),
        }
        env.pop("MA_EXPORT_URL", None)
        s3_env = {**env, **s3.env(prefix="bench"), "MA_EXPORT_PART_MIB": str(part_mib)}
        # One worker at a time on the queue: each export goes where its worker's settings say.
        pairs, idles, local_peaks, result, local_result = [], [], [], {}, {}
        for n in range(rounds):
            local_worker = start_worker(env, work / "worker-local.log")
            local_s, local_result = await export_once(redis, 2 * n, fmt)
            local_peak = vm_hwm_mb(local_worker.pid)
            stop(local_worker)
            local_worker = None
            s3_worker = start_worker(s3_env, work / "worker-s3.log")
            await asyncio.sleep(2)
            idle = vm_rss_mb(s3_worker.pid)
            s3_s, result = await export_once(redis, 2 * n + 1, fmt)
            peak = vm_hwm_mb(s3_worker.pid)
            stop(s3_worker)
            s3_worker = None
            pairs.append((local_s, s3_s, peak))
            idles.append(idle)
            local_peaks.append(local_peak)
            print(
                f"  round {n + 1}: local file {local_s:.2f}s  S3 {s3_s:.2f}s  ratio {local_s / s3_s:.3f}"
                f"  peak RSS: S3 worker {peak:.1f} MB (after start {idle:.1f}), local-file worker {local_peak:.1f} MB",
                file=sys.stderr,
            )
        stored = s3.client().head_object(Bucket=DEV_BUCKET, Key=result["url"].split("/", 3)[3])
        assert stored["ContentLength"] == result["bytes"], "the object is the size the result says"
    finally:
        for worker in (local_worker, s3_worker):
            if worker is not None:
                stop(worker)
        await redis.aclose()
        s3.stop()
        valkey.stop()
        pg.stop()
    ratio = statistics.median(local / remote for local, remote, _ in pairs)
    peak = max(p for _, _, p in pairs)
    return {
        "benchmark": "bulk.export to S3",
        "rows": result.get("rows"),
        "format": fmt,
        "rounds": rounds,
        "part_mib": part_mib,
        "local_s": round(statistics.median(local for local, _, _ in pairs), 3),
        "s3_s": round(statistics.median(remote for _, remote, _ in pairs), 3),
        "bytes": result.get("bytes"),
        "local_bytes": local_result.get("bytes"),
        "ratio": round(ratio, 3),
        "budget_ratio": BUDGET_RATIO,
        "worker_rss_after_start_mb": round(max(idles), 1),
        "local_worker_peak_rss_mb": round(max(local_peaks), 1),
        "worker_peak_rss_mb": round(peak, 1),
        "budget_rss_mb": BUDGET_RSS_MB,
        "ok": ratio >= BUDGET_RATIO and peak <= BUDGET_RSS_MB,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    parser.add_argument("--part-mib", type=int, default=8)
    args = parser.parse_args()
    report = asyncio.run(main(args.rows, args.rounds, args.format, args.part_mib))
    print(json.dumps(report))
    sys.exit(0 if report["ok"] else 1)
