"""usage.aggregate over 1,000,000 raw usage events: the whole job against a bare GROUP BY of the same rows.

One subscription, one month of events, hourly rollups (2,160 of them for 3 features). The job runs in a real
`ma-worker run billing-usage` process and sends its rollups to the identity double; its time is the job's own
(processedOn -> finishedOn). The reference is the bare `GROUP BY feature, hour` of the same rows in the same
PostgreSQL, in alternating rounds; the ratio is the median over rounds of (job / reference).

Budget (issue: billing): ratio <= 1.5.

    .venv/bin/python bench/usage_rollup.py [--events 1000000] [--rounds 5]
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
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg
import httpx
from bullmq import Job, Queue
from redis.asyncio import Redis

from devstack import databases, engines

Q = "billing-usage"
BUDGET_RATIO = 1.5
START, END = datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC)
REFERENCE_SQL = """
    SELECT feature, date_trunc('hour', occurred_at, 'UTC') AS bucket, sum(quantity), count(*)
    FROM usage_events WHERE subscription_id = 'sub_bench' AND occurred_at >= $1 AND occurred_at < $2
    GROUP BY feature, bucket
"""


async def fill(admin_url: str, events: int) -> None:
    conn = await asyncpg.connect(admin_url)
    await conn.execute(
        "INSERT INTO subscriptions (id, organization_id, plan_id, current_period_start,"
        " current_period_end) VALUES ('sub_bench', 'org_acme', 'plan_growth', $1, $2)",
        START,
        END,
    )
    await conn.execute(
        "INSERT INTO usage_events (organization_id, subscription_id, feature, quantity, occurred_at)"
        " SELECT 'org_acme', 'sub_bench', (ARRAY['ai.tokens', 'storage.gb', 'api.calls'])[1 + g % 3],"
        " 1 + (g::bigint * 7919) % 5000, $2::timestamptz + make_interval(secs => (g::float8 * 2592000 / $1))"
        " FROM generate_series(0, $1 - 1) g",
        events,
        START,
    )
    await conn.execute("VACUUM ANALYZE usage_events")
    await conn.close()


async def reference(url: str) -> float:
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        rows = await conn.fetch(REFERENCE_SQL, START, END)
        elapsed = time.perf_counter() - started
        assert len(rows) == 3 * 720, len(rows)
        return elapsed
    finally:
        await conn.close()


async def job_once(redis: Redis, n: int) -> tuple[float, dict]:
    queue = Queue(Q, {"connection": redis})
    job = await queue.add(
        "usage.aggregate",
        {
            "organizationId": "org_acme",
            "subscriptionId": "sub_bench",
            "periodStart": START.isoformat(),
            "periodEnd": END.isoformat(),
            "resolution": "hourly",
        },
        {"attempts": 1, "jobId": f"bench-{n}"},
    )
    while await queue.getJobState(job.id) not in ("completed", "failed"):
        await asyncio.sleep(0.02)
    done = await Job.fromId(queue, job.id)
    if done.failedReason:
        raise RuntimeError(f"usage.aggregate failed: {done.failedReason}")
    return (done.finishedOn - done.processedOn) / 1000, done.returnvalue


async def main(events: int, rounds: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="ma-bench-usage-"))
    pg = engines.postgres(work / "pg", fast=True).start()
    valkey = engines.valkey(work / "valkey", persistent=False).start()
    redis = Redis.from_url(valkey.url, decode_responses=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        urls = await asyncio.to_thread(databases.bootstrap, pg.url)
        await fill(urls.admin, events)
        bindir = Path(sys.executable).parent
        port = engines.free_port()
        log = open(work / "services.log", "wb")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [
                    str(bindir / "python"),
                    "-m",
                    "devstack.identity_double",
                    "--port",
                    str(port),
                    "--database-url",
                    urls.admin,
                    "--service-key",
                    "bench-key",
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        env = {
            **os.environ,
            "REDIS_URL": valkey.url,
            "DATABASE_URL": urls.identity_ro,
            "TASKS_DATABASE_URL": urls.tasks,
            "IDENTITY_BASE_URL": f"http://127.0.0.1:{port}",
            "SUPABASE_SERVICE_ROLE_KEY": "bench-key",
            "PYTHONPATH": str(ROOT),
        }
        procs.append(
            subprocess.Popen(
                [str(bindir / "ma-worker"), "run", Q],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        for _ in range(100):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:  # noqa: ASYNC210
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        await job_once(redis, -1)  # warm: first token, prepared statements, caches
        await reference(urls.identity_ro)
        pairs, result = [], {}
        for n in range(rounds):
            ref = await reference(urls.identity_ro)
            ours, result = await job_once(redis, n)
            pairs.append((ref, ours))
            print(
                f"  round {n + 1}: GROUP BY {ref * 1000:.0f} ms  usage.aggregate {ours * 1000:.0f} ms"
                f"  ratio {ours / ref:.3f}",
                file=sys.stderr,
            )
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        await redis.aclose()
        valkey.stop()
        pg.stop()
    ratio = statistics.median(o / r for r, o in pairs)
    return {
        "benchmark": "usage.aggregate",
        "events": result.get("events"),
        "rollups": result.get("rollups"),
        "rounds": rounds,
        "group_by_ms": round(statistics.median(r for r, _ in pairs) * 1000, 1),
        "job_ms": round(statistics.median(o for _, o in pairs) * 1000, 1),
        "ratio": round(ratio, 3),
        "budget_ratio": BUDGET_RATIO,
        "ok": ratio <= BUDGET_RATIO,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    report = asyncio.run(main(args.events, args.rounds))
    print(json.dumps(report))
    sys.exit(0 if report["ok"] else 1)
