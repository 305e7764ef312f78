"""A pool process's lifecycle: settings at start, schedulers, heartbeat, graceful SIGTERM, Redis outages."""

from __future__ import annotations

import json
import signal
import subprocess
import time

from bullmq import Job, Queue

from devstack import engines
from tests.support.paths import BIN, ROOT
from tests.support.processes import pool_env
from tests.support.stock_clients import clients, start_pool  # noqa: F401 - fixtures (lean and stock runs)
from tests.support.waits import wait_for

Q = "identity-events"


def run_with_env(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ma-worker"), "run", Q], env=env, capture_output=True, text=True, timeout=30, cwd=ROOT
    )


def test_missing_required_setting_exits_at_start_naming_the_variable(valkey, db_urls):
    env = pool_env(valkey.url, db_urls)
    del env["REDIS_URL"]
    result = run_with_env(env)
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("ma-worker: configuration error: REDIS_URL is not set")


def test_malformed_setting_is_named_and_a_secret_value_is_not_echoed(valkey, db_urls):
    result = run_with_env(
        pool_env(valkey.url, db_urls, TASKS_DATABASE_URL="not a url", MA_SHUTDOWN_GRACE="soon")
    )
    assert result.returncode == 78
    assert "TASKS_DATABASE_URL is malformed" in result.stderr
    assert "MA_SHUTDOWN_GRACE is malformed" in result.stderr
    assert "test-service-role-key-very-secret" not in result.stderr


def test_unknown_queue_is_refused_with_the_known_ones_listed(valkey, db_urls):
    result = subprocess.run(
        [str(BIN / "ma-worker"), "run", "identity-event"],
        env=pool_env(valkey.url, db_urls),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 78
    assert "unknown queue 'identity-event'; known queues: identity-events" in result.stderr


async def test_sigterm_during_a_3_second_job_lets_it_complete_and_exits_0(redis, start_pool, tasks_db):
    pool = start_pool(Q)
    queue = Queue(Q, {"connection": redis})
    job = await queue.add("test.effect", {"key": "sigterm", "sleepSeconds": 3})
    await wait_for(
        lambda: tasks_db.fetchval("SELECT count(*) FROM test_attempts WHERE key = 'sigterm'"),
        what="the handler is running",
    )
    sent_ms = time.time() * 1000
    pool.proc.send_signal(signal.SIGTERM)
    code = await wait_for(
        lambda: pool.proc.poll() is not None and (pool.proc.returncode,), timeout=30, what="process exit"
    )
    assert code == (0,)
    assert await queue.getJobState(job.id) == "completed"
    finished = (await Job.fromId(queue, job.id)).finishedOn
    assert finished >= sent_ms, "it waited for the job: the job finished after the SIGTERM"
    assert "shutting down: 1 job(s) in flight" in pool.text()
    assert "stopped identity-events: processed=1 failed=0" in pool.text()
    assert await tasks_db.fetchval("SELECT count(*) FROM test_attempts WHERE key = 'sigterm'") == 1


async def test_a_job_running_past_its_lock_duration_during_a_graceful_stop_keeps_its_lock_and_runs_once(
    redis, start_pool, tasks_db
):
    """The test table's lock is 4 s (renewed every 2 s) and its stall check runs every 2 s: a 9 s job whose slot
    is told to stop after 1 s must keep its lock to the end (LIBRARY_TRAPS §13), or the other slot's stall check
    runs it again."""
    stopping = start_pool(Q)
    queue = Queue(Q, {"connection": redis})
    job = await queue.add("test.effect", {"key": "lock-kept", "sleepSeconds": 9})
    await wait_for(
        lambda: tasks_db.fetchval("SELECT count(*) FROM test_attempts WHERE key = 'lock-kept'"),
        what="the handler is running",
    )
    start_pool(Q)  # a second slot, whose stall check would take the job if its lock lapsed
    stopping.proc.send_signal(signal.SIGTERM)
    await wait_for(lambda: stopping.proc.poll() is not None, timeout=40, what="the stopping slot's exit")
    assert stopping.proc.returncode == 0
    assert await queue.getJobState(job.id) == "completed"
    assert "Missing lock" not in stopping.text()
    assert await tasks_db.fetchval("SELECT count(*) FROM test_attempts WHERE key = 'lock-kept'") == 1
    assert await tasks_db.fetchval("SELECT count(*) FROM test_effects WHERE key = 'lock-kept'") == 1


async def test_a_job_outliving_the_grace_is_force_closed_and_rerun_later(redis, start_pool, tasks_db):
    pool = start_pool(Q, MA_SHUTDOWN_GRACE="1")
    queue = Queue(Q, {"connection": redis})
    job = await queue.add("test.effect", {"key": "long", "sleepSeconds": 8})
    await wait_for(lambda: _state_is(queue, job.id, "active"), what="job active")
    await wait_for(lambda: tasks_db.fetchval("SELECT count(*) FROM test_attempts"), what="first attempt")
    pool.proc.send_signal(signal.SIGTERM)
    await wait_for(lambda: pool.proc.poll() is not None, timeout=15, what="exit")
    assert pool.proc.returncode == 0
    assert "forcing close" in pool.text()
    start_pool(Q)  # the next slot picks it up once the lock lapses (stall check)
    await wait_for(lambda: _state_is(queue, job.id, "completed"), timeout=40, what="re-run completes")
    assert await tasks_db.fetchval("SELECT count(*) FROM test_effects WHERE key = 'long'") == 1
    assert await tasks_db.fetchval("SELECT count(*) FROM test_attempts WHERE key = 'long'") == 2


async def test_heartbeat_record_names_host_pid_queue_process_and_in_flight_jobs(redis, start_pool):
    # Beats 1 s apart, so the 6 s job is listed by several, even if one beat is late on a busy machine.
    pool = start_pool(Q, MA_PROCESS_NAME="identity-events:identity-events_07", MA_HEARTBEAT_INTERVAL="1")
    queue = Queue(Q, {"connection": redis})
    job = await queue.add("test.sleep", {"seconds": 6})
    key = f"ma:worker:{__import__('socket').gethostname()}:{pool.proc.pid}"

    async def beat_with_job() -> dict | None:
        raw = await redis.get(key)
        record = json.loads(raw) if raw else None
        return record if record and job.id in record["inFlight"] else None

    record = await wait_for(beat_with_job, what="heartbeat listing the active job")
    assert record["queue"] == Q and record["pid"] == pool.proc.pid
    assert record["process"] == "identity-events:identity-events_07"
    assert record["concurrency"] == 10
    assert 0 < await redis.ttl(key) <= 20
    assert await redis.zscore("ma:workers", key)
    pool.stop()
    assert await redis.get(key) is None, "a clean stop retires the heartbeat at once"


async def test_schedulers_are_upserted_once_however_often_the_pool_starts(redis, start_pool):
    for _ in range(2):
        pool = start_pool("user-management-jobs")
        await wait_for(lambda pool=pool: "consuming user-management-jobs" in pool.text(), what="pool up")
        pool.stop()
    pool = start_pool("task-notifications")
    await wait_for(lambda: "consuming task-notifications" in pool.text(), what="pool up")
    users = Queue("user-management-jobs", {"connection": redis})
    tasks = Queue("task-notifications", {"connection": redis})
    assert await users.getJobSchedulersCount() == 1
    cleanup = await users.getJobScheduler("impersonation-cleanup")
    assert cleanup["name"] == "impersonation.cleanup" and int(cleanup["every"]) == 86_400_000
    due = await tasks.getJobScheduler("task-due-soon")
    assert due["name"] == "task.due-soon" and int(due["every"]) == 300_000
    assert due["template"]["data"] == {"windowMinutes": 60}
    # one pending iteration per scheduler, not one per start
    assert await users.getDelayedCount() + await users.getWaitingCount() == 1


async def test_redis_unreachable_at_start_is_retried_with_backoff_then_processing_begins(
    start_pool, tmp_path
):
    port = engines.free_port()
    pool = start_pool(Q, REDIS_URL=f"redis://127.0.0.1:{port}/0")
    await wait_for(
        lambda: pool.text().count("Redis connection failed at start") >= 2,
        timeout=20,
        what="two logged connection failures",
    )
    assert pool.proc.poll() is None, "an outage is not a crash"
    late = engines.valkey(tmp_path / "late-valkey", port=port).start()
    try:
        from redis.asyncio import Redis

        client = Redis.from_url(late.url, decode_responses=True)
        queue = Queue(Q, {"connection": client})
        job = await queue.add("test.sleep", {"seconds": 0})
        await wait_for(lambda: _state_is(queue, job.id, "completed"), timeout=40, what="job processed")
        assert "Redis connection recovered" in pool.text()
        await client.aclose()
        pool.stop()
    finally:
        late.stop()


async def test_sigterm_while_redis_is_unreachable_exits_cleanly(start_pool):
    pool = start_pool(Q, REDIS_URL=f"redis://127.0.0.1:{engines.free_port()}/0")
    await wait_for(lambda: "Redis connection failed at start" in pool.text(), what="failure logged")
    assert pool.stop() == 0


async def _state_is(queue: Queue, job_id: str, want: str) -> bool:
    return await queue.getJobState(job_id) == want


def test_a_sentinel_url_without_the_master_name_is_refused_at_start_and_its_password_not_echoed(
    valkey, db_urls
):
    result = run_with_env(
        pool_env(valkey.url, db_urls, REDIS_URL="redis+sentinel://:s3cret-pw@127.0.0.1:26379")
    )
    assert result.returncode == 78
    assert "REDIS_URL is malformed" in result.stderr
    assert "s3cret-pw" not in result.stderr
