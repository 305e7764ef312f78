"""A realistic mix: `task.assigned` jobs through the pool against a bare asyncio loop doing the same work.

Each job is the real handler (handlers/task_notifications.py) in `ma-worker run task-notifications` with the real
queue table (concurrency 20): a context check at the identity double (HTTP), then in one PostgreSQL transaction
the organization's status, the task's tenancy and the notification insert (ON CONFLICT DO NOTHING), then the
latency sample in Redis. The bare reference, in the same run and interleaved: one asyncio process with the same
clients (IdentityClient over the pool's httpx client, the pool's SQLAlchemy engine, a redis-py client), 20 tasks
making the same HTTP call, the same three statements and the same Redis pipeline for as many assignments, with
no queue at all. Every job/assignment has its own task id, so every insert adds a row.

Budget (issue 18): pool >= 0.7x bare (median of per-round ratios) over 100,000 jobs: by default 50,000 per side
and round, in 2 rounds of alternating order (pool first, then bare first), so each side runs 100,000 in all
(about 4 minutes per side and round on this 2-core machine).

    .venv/bin/python bench/task_mix.py [--jobs 50000] [--rounds 2]
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
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx
from bullmq import Queue
from pydantic import SecretStr
from redis.asyncio import Redis

from devstack import databases, engines
from handlers.clients.identity import IdentityClient
from handlers.task_notifications import TaskAssigned, task_assigned
from pool.downstream import DownstreamCounts, http_client
from pool.runtime import make_engine

Q = "task-notifications"
CONCURRENCY = 20
BUDGET = 0.7
SERVICE_KEY = "bench-service-role-key-0000"


def assignment(task_id: str) -> dict[str, str]:
    return {
        "taskId": task_id,
        "organizationId": "org_acme",
        "tenantId": "org_acme_t1",
        "assigneeId": "user_acme_2",
        "assignedBy": "user_acme_1",
        "assignedAt": datetime.now(UTC).isoformat(),
    }


class BareContext:
    """What the handler reads from its JobContext, built once as the pool builds it: the same clients."""

    def __init__(self, identity: IdentityClient, tasks_db: Any, redis: Redis) -> None:
        self.identity, self.tasks_db, self.redis = identity, tasks_db, redis
        self.settings = type("S", (), {"TASKS_PRODUCT_SLUG": "tasks"})()
        self.log = None


async def bare_round(urls: databases.DatabaseUrls, identity_url: str, redis_url: str, jobs: int) -> float:
    """The handler's own function called in a plain loop of 20 tasks: HTTP, SQL and Redis, no queue."""
    http = http_client("identity", DownstreamCounts(), max_connections=CONCURRENCY + 10)
    engine = make_engine(urls.tasks)
    redis = Redis.from_url(redis_url, decode_responses=True)
    ctx = BareContext(IdentityClient(identity_url, SecretStr(SERVICE_KEY), http), engine, redis)
    prefix = f"bare_{uuid.uuid4().hex[:8]}"
    payloads = [TaskAssigned.model_validate(assignment(f"{prefix}_{i}")) for i in range(jobs)]
    todo = iter(payloads)

    async def lane() -> None:
        for payload in todo:
            result = await task_assigned(ctx, payload)  # type: ignore[arg-type]
            assert result["notified"], result

    try:
        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(CONCURRENCY)))
        return jobs / (time.perf_counter() - started)
    finally:
        await http.aclose()
        await engine.dispose()
        await redis.aclose()


async def pool_round(
    redis: Redis, urls: databases.DatabaseUrls, identity_url: str, redis_url: str, jobs: int, work: Path
) -> float:
    await redis.flushdb()
    queue = Queue(Q, {"connection": redis})
    await queue.pause()
    prefix = f"pool_{uuid.uuid4().hex[:8]}"
    for at in range(0, jobs, 5000):
        await queue.addBulk(
            [
                {"name": "task.assigned", "data": assignment(f"{prefix}_{i}")}
                for i in range(at, min(jobs, at + 5000))
            ]
        )
    log = work / "pool.log"
    log.write_text("")
    env = {
        # as supervisord runs the pool: no MA_ overrides, stdout block-buffered (the log flushed once per loop turn)
        **{k: v for k, v in os.environ.items() if not k.startswith("MA_") and k != "PYTHONUNBUFFERED"},
        "REDIS_URL": redis_url,
        "DATABASE_URL": urls.identity_ro,
        "TASKS_DATABASE_URL": urls.tasks,
        "IDENTITY_BASE_URL": identity_url,
        "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
        "MA_QUEUE_TABLE": "pool.queue_table:QUEUES",
        "PYTHONPATH": str(ROOT),
    }
    with open(log, "a") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "ma-worker"), "run", Q],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while f"consuming {Q}" not in log.read_text():
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-2000:]
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            started = time.perf_counter()
            await queue.resume()
            while await redis.llen(f"bull:{Q}:wait") or await redis.llen(f"bull:{Q}:active"):
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - started
        finally:
            proc.terminate()
            proc.wait(30)
    failed = await redis.zcard(f"bull:{Q}:failed")
    assert not failed, f"{failed} job(s) failed: {log.read_text()[-2000:]}"
    return jobs / elapsed


async def main(jobs: int, rounds: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="ma-bench-mix-"))
    valkey = engines.valkey(work / "valkey", persistent=False).start()
    pg = engines.postgres(work / "pg" / "data", fast=True).start()
    try:
        return await measure(valkey, pg, work, jobs, rounds)
    finally:
        pg.stop()
        valkey.stop()


async def measure(valkey: Any, pg: Any, work: Path, jobs: int, rounds: int) -> dict[str, Any]:
    urls = await asyncio.to_thread(databases.bootstrap, pg.url)  # it runs its own event loop
    port = engines.free_port()
    identity_url = f"http://127.0.0.1:{port}"
    double_log = open(work / "identity.log", "wb")  # noqa: SIM115 - the double's output, for a failure
    double = subprocess.Popen(
        [
            *(sys.executable, "-m", "devstack.identity_double", "--port", str(port)),
            *("--database-url", urls.admin, "--service-key", SERVICE_KEY, "--token-ttl", "300"),
        ],
        cwd=ROOT,
        stdout=double_log,
        stderr=subprocess.STDOUT,
    )
    redis = Redis.from_url(valkey.url, decode_responses=True)
    rates: dict[str, list[float]] = {"pool": [], "bare": []}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                async with httpx.AsyncClient(timeout=1) as probe:
                    if (await probe.get(identity_url + "/healthz")).status_code == 200:
                        break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and double.poll() is None, (work / "identity.log").read_text()
            await asyncio.sleep(0.2)
        for n in range(rounds):
            for kind in ("pool", "bare") if n % 2 == 0 else ("bare", "pool"):
                if kind == "pool":
                    rate = await pool_round(redis, urls, identity_url, valkey.url, jobs, work)
                else:
                    rate = await bare_round(urls, identity_url, valkey.url, jobs)
                rates[kind].append(rate)
            print(
                f"  round {n + 1}: pool {rates['pool'][-1]:.0f} jobs/s, bare {rates['bare'][-1]:.0f}/s",
                file=sys.stderr,
            )
    finally:
        await redis.aclose()
        double.terminate()
        double.wait(10)
        double_log.close()
    ratio = statistics.median(p / b for p, b in zip(rates["pool"], rates["bare"], strict=True))
    return {
        "benchmark": "task.assigned mix: pool vs bare asyncio loop, same clients",
        "jobs": jobs,
        "rounds": rounds,
        "concurrency": CONCURRENCY,
        "pool_jobs_per_s": round(statistics.median(rates["pool"])),
        "bare_jobs_per_s": round(statistics.median(rates["bare"])),
        "ratio": round(ratio, 3),
        "budget": BUDGET,
        "ok": ratio >= BUDGET,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=50_000, help="per side and round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    report = asyncio.run(main(args.jobs, args.rounds))
    print(json.dumps(report))
    sys.exit(0 if report["ok"] else 1)
