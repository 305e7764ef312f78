"""bulk.export of 1,000,000 users: throughput against `COPY ... TO STDOUT | gzip` on the same rows, and peak RSS.

Both sides read the same rows (users ordered by id) from the same PostgreSQL in the same run, in alternating
rounds; the ratio is the median over rounds of (reference seconds / export seconds), so 1.0 means as fast as
COPY piped through gzip. Export seconds are the job's own run time (processedOn -> finishedOn) in a real
`ma-worker run super-admin.bulk-job` process; its peak RSS is the kernel's high-water mark (VmHWM).

Budgets (issue: super-admin.bulk-job): ratio >= 0.8, peak RSS <= 150 MB.

    .venv/bin/python bench/export.py [--rows 1000000] [--rounds 3] [--format csv|jsonl]
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

import asyncpg
from bullmq import Job, Queue
from redis.asyncio import Redis

from devstack import databases, engines

Q = "super-admin.bulk-job"
BUDGET_RATIO, BUDGET_RSS_MB = 0.8, 150.0
REFERENCE_SQL = (
    "COPY (SELECT id, email, full_name, status, is_super_admin, created_at FROM users ORDER BY id)"
    " TO STDOUT WITH (FORMAT csv, HEADER)"
)


async def fill(admin_url: str, rows: int) -> None:
    conn = await asyncpg.connect(admin_url)
    await conn.execute(
        "INSERT INTO users (id, email, full_name, status, created_at)"
        " SELECT 'bench_' || lpad(g::text, 8, '0'), 'bench' || g || '@load' || (g % 97) || '.example',"
        " 'Bench User ' || g || ', \"quoted\"', CASE WHEN g % 10 = 0 THEN 'suspended' ELSE 'active' END,"
        " now() - make_interval(secs => g) FROM generate_series(1, $1) g",
        rows,
    )
    await conn.execute("VACUUM ANALYZE users")
    await conn.close()


def reference(identity_url: str, out: Path) -> float:
    psql = engines.postgres_bindir() / "psql"
    started = time.perf_counter()
    with open(out, "wb") as sink:
        copy = subprocess.Popen(
            [str(psql), identity_url, "-X", "-q", "-c", REFERENCE_SQL], stdout=subprocess.PIPE
        )
        gz = subprocess.run(["gzip", "-6", "-c"], stdin=copy.stdout, stdout=sink, check=True)
        assert copy.stdout is not None
        copy.stdout.close()
        assert copy.wait() == 0 and gz.returncode == 0
    return time.perf_counter() - started


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def export_once(redis: Redis, n: int, fmt: str) -> tuple[float, dict]:
    queue = Queue(Q, {"connection": redis})
    job = await queue.add(
        "bulk.export",
        {"bulkJobId": f"bench{n}", "actorId": "user_root", "target": "users", "format": fmt},
        {"attempts": 1},
    )
    while await queue.getJobState(job.id) not in ("completed", "failed"):
        await asyncio.sleep(0.05)
    done = await Job.fromId(queue, job.id)
    if done.failedReason:
        raise RuntimeError(f"export failed: {done.failedReason}")
    return (done.finishedOn - done.processedOn) / 1000, done.returnvalue


async def main(rows: int, rounds: int, fmt: str) -> dict:
    work = Path(tempfile.mkdtemp(prefix="ma-bench-export-"))
    pg = engines.postgres(work / "pg", fast=True).start()
    valkey = engines.valkey(work / "valkey", persistent=False).start()
    redis = Redis.from_url(valkey.url, decode_responses=True)
    worker = None
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
        log = open(work / "worker.log", "wb")  # noqa: SIM115
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "ma-worker"), "run", Q],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        await asyncio.sleep(2)
        rss_idle = vm_hwm_mb(worker.pid)
        pairs, ref_bytes, result = [], 0, {}
        for n in range(rounds):
            ref = reference(urls.identity_ro, work / "reference.csv.gz")
            ref_bytes = (work / "reference.csv.gz").stat().st_size
            ours, result = await export_once(redis, n, fmt)
            pairs.append((ref, ours))
            print(
                f"  round {n + 1}: COPY|gzip {ref:.2f}s  export {ours:.2f}s  ratio {ref / ours:.3f}",
                file=sys.stderr,
            )
        peak = vm_hwm_mb(worker.pid)
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        await redis.aclose()
        valkey.stop()
        pg.stop()
    ratio = statistics.median(r / o for r, o in pairs)
    return {
        "benchmark": "bulk.export",
        "rows": result.get("rows"),
        "format": fmt,
        "rounds": rounds,
        "reference_s": round(statistics.median(r for r, _ in pairs), 3),
        "export_s": round(statistics.median(o for _, o in pairs), 3),
        "rows_per_s": round(result.get("rows", 0) / statistics.median(o for _, o in pairs)),
        "bytes": result.get("bytes"),
        "reference_bytes": ref_bytes,
        "ratio": round(ratio, 3),
        "budget_ratio": BUDGET_RATIO,
        "worker_rss_idle_mb": round(rss_idle, 1),
        "worker_peak_rss_mb": round(peak, 1),
        "budget_rss_mb": BUDGET_RSS_MB,
        "ok": ratio >= BUDGET_RATIO and peak <= BUDGET_RSS_MB,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    args = parser.parse_args()
    report = asyncio.run(main(args.rows, args.rounds, args.format))
    print(json.dumps(report))
    sys.exit(0 if report["ok"] else 1)
