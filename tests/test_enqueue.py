"""`ma-worker enqueue`: add, requeue one, requeue all failed; and what we enqueue a Node worker can read."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from bullmq import Job, Queue

from pool.queue_table import QUEUES
from tests.support.paths import BIN, ROOT
from tests.support.waits import wait_for

Q = "billing-usage"


def cli(valkey: Any, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(BIN) + ":/usr/bin:/bin", "REDIS_URL": valkey.url}
    return subprocess.run(
        [str(BIN / "ma-worker"), "enqueue", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        input=stdin,
    )


async def test_enqueue_adds_a_job_with_the_queue_table_options(valkey, redis):
    out = cli(valkey, Q, "usage.aggregate", "--data", '{"organizationId": "org_acme"}', "--job-id", "u-1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"added {Q} usage.aggregate#u-1"
    job = await Job.fromId(Queue(Q, {"connection": redis}), "u-1")
    assert job.data == {"organizationId": "org_acme"}
    spec = QUEUES[Q]
    assert job.opts["attempts"] == spec.attempts == 14
    assert job.opts["backoff"] == {"type": "exponential", "delay": 2000}
    again = cli(valkey, Q, "usage.aggregate", "--data", "{}", "--job-id", "u-1")
    assert again.returncode == 0 and "already exists" in again.stdout and "nothing added" in again.stdout
    assert await Queue(Q, {"connection": redis}).getWaitingCount() == 1


async def test_enqueue_with_delay_lands_in_delayed(valkey, redis):
    out = cli(valkey, Q, "usage.aggregate", "--delay", "60000")
    assert out.returncode == 0 and "runs in 60.0s" in out.stdout
    assert await Queue(Q, {"connection": redis}).getDelayedCount() == 1


def test_enqueue_errors_are_one_clear_line(valkey):
    cases = [
        ((Q + "x", "a"), "unknown queue 'billing-usagex'; known queues: identity-events"),
        ((Q, "a", "--data", "{nope"), "--data is not valid JSON: Expecting property name"),
        ((Q, "a", "--data", "[1]"), "--data must be a JSON object"),
        ((Q, "a", "--job-id", "a:b"), "--job-id 'a:b' is invalid"),
        ((Q, "--requeue", "missing-1"), "no job 'missing-1' on queue billing-usage"),
        ((Q,), "give a job NAME to add"),
    ]
    for args, message in cases:
        out = cli(valkey, *args)
        assert out.returncode == 2, args
        assert out.stderr.startswith("ma-worker: ") and message in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr


def test_enqueue_without_redis_url_names_it():
    out = subprocess.run(
        [str(BIN / "ma-worker"), "enqueue", Q, "a"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and "REDIS_URL is not set" in out.stderr


async def fail_jobs(redis: Any, start_pool: Any, count: int) -> list[str]:
    """Real failures through a real pool process (the test table refuses `test.refuse`)."""
    queue = Queue(Q, {"connection": redis})
    ids = [(await queue.add("test.refuse", {"key": f"org_{i}"})).id for i in range(count)]
    pool = start_pool(Q)

    async def all_failed() -> bool:
        return await queue.getFailedCount() == count

    await wait_for(all_failed, what=f"{count} failed jobs")
    pool.stop()
    return ids


async def test_requeue_one_failed_job_moves_it_back_to_wait_with_fresh_attempts(valkey, redis, start_pool):
    (job_id,) = await fail_jobs(redis, start_pool, 1)
    out = cli(valkey, Q, "--requeue", job_id)
    assert out.returncode == 0, out.stderr
    assert f"requeued {Q} test.refuse#{job_id} (was: organization org_0 does not exist)" == out.stdout.strip()
    queue = Queue(Q, {"connection": redis})
    assert await queue.getJobState(job_id) == "waiting"
    assert (await Job.fromId(queue, job_id)).attemptsMade == 0
    again = cli(valkey, Q, "--requeue", job_id)
    assert again.returncode == 2 and "is waiting, not failed" in again.stderr


async def test_requeue_all_failed_shows_the_count_asks_and_acts_only_when_confirmed(
    valkey, redis, start_pool
):
    await fail_jobs(redis, start_pool, 3)
    queue = Queue(Q, {"connection": redis})
    refused = cli(valkey, Q, "--requeue-failed", stdin="")
    assert refused.returncode == 0 and "nothing requeued" in refused.stdout
    assert (
        "3 failed job(s) on billing-usage" in refused.stderr
        and "organization org_2 does not exist" in refused.stderr
    )
    assert await queue.getFailedCount() == 3
    done = cli(valkey, Q, "--requeue-failed", "--yes")
    assert done.returncode == 0 and done.stdout.strip() == f"requeued 3 failed job(s) on {Q}"
    assert await queue.getFailedCount() == 0 and await queue.getWaitingCount() == 3
    assert cli(valkey, Q, "--requeue-failed", "--yes").stdout.strip() == f"no failed jobs on {Q}"


async def test_what_we_enqueue_a_node_bullmq_worker_can_read(valkey, redis, node_bullmq):
    payload = {"organizationId": "org_acme", "features": ["ai.tokens"], "periodStart": "2024-08-01"}
    assert (
        cli(
            valkey,
            "billing-invoice",
            "invoice.generate",
            "--data",
            json.dumps(payload),
            "--job-id",
            "inv-2024-08",
        ).returncode
        == 0
    )
    out = subprocess.run(
        ["node", "consume.mjs", valkey.url, "billing-invoice", "1", "20000"],
        cwd=node_bullmq,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[0])
    assert seen == {
        "id": "inv-2024-08",
        "name": "invoice.generate",
        "data": payload,
        "attempts": QUEUES["billing-invoice"].attempts,
        "backoff": {"type": "exponential", "delay": 2000},
        "delay": 0,
    }
    job = await Job.fromId(Queue("billing-invoice", {"connection": redis}), "inv-2024-08")
    assert job.returnvalue == {"seenBy": "node"}
