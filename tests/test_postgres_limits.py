"""PostgreSQL at max_connections (staged for real: the test opens connections until the server refuses one):
jobs that need a new connection fail and are retried, the slot keeps running, and the cause is named in the
job's reason, in the pool's downstream counts and in ma-top's downstream-failing finding for postgres; once
connections are released, every job completes exactly once."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import asyncpg
from bullmq import Job, Queue

from tests.support import top
from tests.support.waits import wait_for

Q = "identity-events"


async def _fill(url: str) -> list[asyncpg.Connection]:
    """Connect (as a superuser: no slot is reserved from it) until PostgreSQL says there are too many clients."""
    held: list[asyncpg.Connection] = []
    while True:
        try:
            held.append(await asyncpg.connect(url))
        except asyncpg.TooManyConnectionsError:
            return held
        assert len(held) <= 1000, "max_connections never reached"


async def test_postgres_at_max_connections_jobs_retry_the_slot_survives_and_the_cause_is_shown(
    redis: Any, valkey: Any, start_pool: Any, db_urls: Any, tasks_db: Any, tmp_path: Path
) -> None:
    pool = start_pool(Q)
    await wait_for(lambda: f"consuming {Q}" in pool.text(), what="pool up")
    keys = [f"pgmax-{uuid.uuid4().hex[:8]}-{i}" for i in range(10)]
    held = await _fill(db_urls.admin)  # before any job: the slot has no connection yet and needs a new one
    try:
        queue = Queue(Q, {"connection": redis})
        opts = {"attempts": 100, "backoff": {"type": "fixed", "delay": 500}}
        jobs = [await queue.add("test.effect", {"key": k}, opts) for k in keys]

        async def retried() -> Job | None:
            job = await Job.fromId(queue, jobs[0].id)
            return job if job is not None and job.attemptsMade >= 2 else None

        job = await wait_for(retried, what="a job retried")
        assert "too many clients" in job.failedReason  # PostgreSQL's own words, SQLSTATE 53300

        def shown() -> list[dict[str, str]]:
            return top.about(top.once(valkey.url, tmp_path), "downstream-failing", "postgres")

        found = await wait_for(shown, timeout=30, what="ma-top --once: postgres failing")
        assert "refused: too many connections (max_connections)" in found[0]["evidence"]
        assert await queue.getJobState(jobs[0].id) in ("delayed", "wait", "active")  # not failed for good
        assert pool.proc.poll() is None
    finally:
        for conn in held:
            await conn.close()

    async def all_done() -> bool:
        n = await tasks_db.fetchval("SELECT count(*) FROM test_effects WHERE key = ANY($1::text[])", keys)
        return bool(n == len(keys))

    await wait_for(all_done, timeout=60, what="every job completes once connections are released")
    rows = await tasks_db.fetch(
        "SELECT key, count(*) AS n FROM test_attempts WHERE key = ANY($1::text[]) GROUP BY key", keys
    )
    assert {r["key"]: r["n"] for r in rows} == dict.fromkeys(keys, 1)
    assert pool.proc.poll() is None
    assert "Traceback" not in pool.text()
