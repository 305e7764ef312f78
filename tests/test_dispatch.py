"""Dispatch through a real `ma-worker run` process: validation at the edge, the two failure kinds."""

from __future__ import annotations

from typing import Any

import pytest
from bullmq import Job, Queue

from tests.support.stock_clients import clients, start_pool  # noqa: F401 - fixtures (lean and stock runs)
from tests.support.waits import wait_for

Q = "identity-events"


async def add(redis: Any, name: str, data: Any, **opts: Any) -> Job:
    return await Queue(Q, {"connection": redis}).add(name, data, opts)


async def state(redis: Any, job_id: str) -> str:
    return await Queue(Q, {"connection": redis}).getJobState(job_id)


async def finished(redis: Any, job: Job, want: str = "completed", timeout: float = 20) -> Job:
    await wait_for(lambda: _is(redis, job.id, want), timeout=timeout, what=f"job {job.name}#{job.id} {want}")
    fetched = await Job.fromId(Queue(Q, {"connection": redis}), job.id)
    assert fetched is not None
    return fetched


async def _is(redis: Any, job_id: str, want: str) -> bool:
    return await state(redis, job_id) == want


async def test_invalid_payload_fails_at_once_naming_the_field_and_the_process_keeps_working(
    redis, start_pool
):
    pool = start_pool(Q)
    bad = await add(redis, "test.order", {"orderId": "o-1", "quantity": "many"}, attempts=5)
    missing = await add(redis, "test.order", {"quantity": 2}, attempts=5)
    good = await add(redis, "test.order", {"orderId": "o-2", "quantity": 2, "email": "a@b.c"}, attempts=5)

    bad = await finished(redis, bad, "failed")
    assert "invalid payload for test.order" in bad.failedReason
    assert "quantity" in bad.failedReason and "email" in bad.failedReason
    assert bad.attemptsMade == 1, "a bad payload must not be retried"
    missing = await finished(redis, missing, "failed")
    assert "orderId: Field required" in missing.failedReason
    good = await finished(redis, good)
    assert good.returnvalue == {"orderId": "o-2"}
    assert pool.proc.poll() is None


async def test_unknown_job_name_fails_without_retry_and_names_the_job(redis, start_pool):
    start_pool(Q)
    job = await finished(
        redis, await add(redis, "organization.exploded", {"organizationId": "o"}, attempts=5), "failed"
    )
    assert "unknown job name 'organization.exploded' on queue identity-events" in job.failedReason
    assert job.attemptsMade == 1
    ok = await finished(redis, await add(redis, "test.sleep", {"seconds": 0}))
    assert ok.returnvalue == {"slept": 0}


async def test_non_object_payload_from_a_foreign_producer_is_refused_with_a_reason(redis, start_pool):
    start_pool(Q)
    job = await finished(redis, await add(redis, "test.order", ["not", "an", "object"]), "failed")
    assert "invalid payload for test.order" in job.failedReason
    assert job.attemptsMade == 1


async def test_permanent_error_fails_now_and_is_reported_on_the_event_stream(redis, start_pool):
    start_pool(Q)
    job = await finished(redis, await add(redis, "test.refuse", {"key": "org_x"}, attempts=5), "failed")
    assert job.failedReason == "organization org_x does not exist"
    assert job.attemptsMade == 1

    async def failure_event() -> list[Any]:
        entries = await redis.xrange("ma:events")
        return [f for _, f in entries if f.get("kind") == "failed" and f.get("jobId") == job.id]

    (event,) = await wait_for(failure_event, what="failure event on ma:events")
    assert event["queue"] == Q and event["message"] == "organization org_x does not exist"


async def test_transient_errors_retry_with_backoff_until_success(redis, start_pool):
    start_pool(Q)
    job = await finished(redis, await add(redis, "test.flaky", {"key": "k", "succeedOnAttempt": 3}))
    assert job.returnvalue == {"attempt": 3}
    assert job.attemptsMade == 3


async def test_an_exponential_backoff_is_capped_per_retry_and_the_job_keeps_its_producers_options(
    redis, start_pool
):
    """A base of 60 s would wait 60 s and then 120 s; the test table caps each wait at 1 s. Only the pool's
    copy of the options changes: Redis keeps the producer's backoff (a Node worker would read it)."""
    start_pool(Q)
    backoff = {"type": "exponential", "delay": 60_000}
    job = await add(redis, "test.flaky", {"key": "cap", "succeedOnAttempt": 3}, attempts=3, backoff=backoff)
    done = await finished(redis, job, timeout=30)
    assert done.returnvalue == {"attempt": 3} and done.attemptsMade == 3
    assert done.opts["backoff"] == backoff


async def test_a_throttle_asking_for_10_minutes_defers_no_longer_than_the_cap_and_burns_no_attempt(
    redis, start_pool
):
    """Retry-After: 600 twice; the test table's cap (1 s) bounds each wait: done in seconds, on attempt 1."""
    start_pool(Q)
    job = await add(redis, "test.throttle", {"key": "long", "times": 2, "retryAfter": 600}, attempts=1)
    done = await finished(redis, job, timeout=30)
    assert done.returnvalue == {"calls": 3, "attempt": 1} and done.attemptsMade == 1


async def test_jobs_without_attempts_from_a_producer_get_the_queue_defaults(redis, start_pool):
    """Node producers often leave attempts to the consumer: the queue table's apply (3 in the test table)."""
    start_pool(Q)
    job = await finished(redis, await add(redis, "test.flaky", {"key": "k", "succeedOnAttempt": 9}), "failed")
    assert job.attemptsMade == 3
    assert "downstream unavailable (attempt 3)" in job.failedReason


async def test_throttled_job_is_deferred_without_burning_an_attempt(redis, start_pool):
    pool = start_pool(Q)
    job = await add(redis, "test.throttle", {"key": "t1", "times": 2, "retryAfter": 1}, attempts=1)
    await wait_for(lambda: _is(redis, job.id, "delayed"), what="job deferred to delayed")
    job = await finished(redis, job, timeout=30)
    assert job.returnvalue == {"calls": 3, "attempt": 1}, "two throttles burned no attempt (attempts=1)"
    assert job.attemptsMade == 1
    await wait_for(lambda: "retry in 1.0s: identity answered 429" in pool.text(), what="throttle log line")


async def test_a_429_storm_of_300_deferred_jobs_writes_a_handful_of_throttle_lines_with_the_count(
    redis, start_pool
):
    pool = start_pool(Q)
    queue = Queue(Q, {"connection": redis})
    jobs = await queue.addBulk(
        [
            {"name": "test.throttle", "data": {"key": f"storm-{i}", "times": 1, "retryAfter": 1}}
            for i in range(300)
        ]
    )

    async def all_completed() -> bool:
        return await queue.getCompletedCount() >= len(jobs)

    await wait_for(all_completed, timeout=60, what="300 throttled jobs completed after their deferral")
    assert pool.stop() == 0  # closes the throttle window: its coalesced line is written
    lines = [ln for ln in pool.text().splitlines() if "throttled" in ln and "pool.runtime" not in ln]
    assert 2 <= len(lines) <= 4, lines  # before: one `throttled, retry in 1.0s` line per deferred job
    assert "retry in 1.0s" in lines[0], "the window's first throttle names its job and retry-after"
    firsts = [ln for ln in lines if " more in the last " not in ln]  # a window's first: one throttle
    more = [int(ln.rsplit(" x", 1)[1].split()[0]) for ln in lines if " more in the last " in ln]
    assert len(firsts) + sum(more) == 300, f"the coalesced lines count every throttle: {lines}"


async def test_one_log_line_per_job_with_duration_queue_name_id_attempt_and_outcome(redis, start_pool):
    pool = start_pool(Q)
    job = await finished(redis, await add(redis, "test.sleep", {"seconds": 0.2}))
    line = await wait_for(
        lambda: [ln for ln in pool.text().splitlines() if f"test.sleep#{job.id} " in ln], what="job log line"
    )
    assert len(line) == 1
    assert line[0].split(": ", 1)[1].startswith("0.2") and line[0].endswith(
        f"{Q} test.sleep#{job.id} try=1 ok"
    )


async def test_secrets_never_reach_the_log(redis, start_pool):
    pool = start_pool(Q)
    job = await finished(
        redis, await add(redis, "test.refuse", {"key": "test-service-role-key-very-secret"}), "failed"
    )
    await wait_for(lambda: f"#{job.id}" in pool.text(), what="failure logged")
    assert "test-service-role-key-very-secret" not in pool.text()
    assert "organization *** does not exist" in pool.text()


async def test_a_foreign_producers_non_json_data_fails_that_job_with_a_reason_and_nothing_else(
    redis, start_pool, clients
):
    """bullmq's Job.fromJSON raises on such data inside the fetch loop; PoolWorker hands it to the dispatcher."""
    if clients == "stock":
        pytest.skip("PoolWorker's own behaviour: bullmq's stock Worker lets such a job stall (documented)")
    pool = start_pool(Q)
    garbage = await add(redis, "test.order", {"orderId": "o-9", "quantity": 1}, delay=1500, attempts=5)
    await redis.hset(
        f"bull:{Q}:{garbage.id}", "data", "orderId=o-9&quantity=1"
    )  # e.g. a form-encoded producer
    after = await add(
        redis, "test.order", {"orderId": "o-10", "quantity": 1, "email": "a@b.c"}, delay=1500, attempts=5
    )

    await wait_for(lambda: _is(redis, garbage.id, "failed"), timeout=30, what="the non-JSON job failed")
    raw = await redis.hgetall(f"bull:{Q}:{garbage.id}")  # Job.fromId would choke on it as bullmq's worker did
    assert raw["atm"] == "1", "failed at once, not after stalls"
    assert raw["failedReason"] == (
        "data: not valid JSON (starts 'orderId=o-9&quantity=1'); a foreign producer? nothing was run"
    )
    assert (
        await redis.hget(f"bull:{Q}:{garbage.id}", "data") == "orderId=o-9&quantity=1"
    )  # kept for inspection
    assert (await finished(redis, after, "completed", timeout=30)).returnvalue == {"orderId": "o-10"}
    assert "stalled" not in pool.text() and "worker error" not in pool.text()
