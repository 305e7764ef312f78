"""downstream-failing and long-running on the real stack: identity answering 500, Stripe answering 503, a job
that runs long, each staged against real pool processes, Valkey, PostgreSQL and the doubles; then read as an
on-call engineer reads it (`ma-top --once --json`, a fresh process each time, and the exporter), and read again
until the finding clears by itself once the incident is over."""

from __future__ import annotations

import re
from typing import Any

import pytest
from bullmq import Queue

from tests.support.billing import paid_invoice
from tests.support.exporter import Exporter, value
from tests.support.top import about, badge, first_screen, once, pane
from tests.support.waits import completed, run_job, wait_for

SYNC = "billing-payment-sync"
WINDOW = {"MA_TOP_RATE_WINDOW_S": "15"}
"""A short window, so the test sees a finding clear (whole minutes: an error stays in it for up to 75 s)."""
WIDE = {"MA_TOP_RATE_WINDOW_S": "120"}
"""A window that surely holds every error of the incident when it is read, whenever the minute turns."""


def in_exporter(exp: Exporter, kind: str, subject: str) -> bool:
    """`ma_finding` has the finding, whatever its severity (critical while nothing answers ok)."""
    metrics = exp.scrape()
    return any(
        value(metrics, "ma_finding", kind=kind, subject=subject, severity=s) == 1
        for s in ("critical", "warning", "info")
    )


def requests(exp: Exporter, downstream: str, outcome: str) -> float:
    return value(exp.scrape(), "ma_downstream_requests_total", downstream=downstream, outcome=outcome) or 0.0


@pytest.mark.slow  # a staged incident on the full stack: CI runs it in its own step
async def test_identity_answering_500_is_downstream_failing_for_identity_in_once_and_the_exporter_until_it_recovers(
    redis, valkey, start_real_pool, identity, exporter, tmp_path
):
    q = "user-management-jobs"
    exp = exporter(**WINDOW)
    identity.fault(500, count=4)  # the next four calls, whatever they are: the worker's token, the cleanup
    start_real_pool(q)
    queue = Queue(q, {"connection": redis})
    job = await queue.add("session.cleanup", {"olderThanDays": 40}, {"attempts": 8})

    def failing(window: dict[str, str] = WINDOW) -> list[dict[str, str]]:
        return about(once(valkey.url, tmp_path, **window), "downstream-failing", "identity")

    await wait_for(  # first: the exporter samples every 0.3 s with the short window
        lambda: in_exporter(exp, "downstream-failing", "identity"),
        timeout=60,
        what="ma_finding in the exporter",
    )
    (found,) = await wait_for(
        lambda: failing(WIDE), timeout=30, what="downstream-failing identity in --once --json"
    )
    assert found["goto"] == "events:retry identity" and found["cause"].startswith("identity failing: ")
    assert found["evidence"].startswith("identity: ") and "× 5xx in the last" in found["evidence"]

    done = await completed(queue, job.id, timeout=90)  # the fault is used up: a retry gets through
    assert done.returnvalue["olderThanDays"] == 40
    await wait_for(lambda: requests(exp, "identity", "ok") >= 1, what="identity's ok answers counted")
    assert requests(exp, "identity", "5xx") == 4, "every 500 counted once"

    await wait_for(lambda: not failing(), timeout=150, what="downstream-failing cleared in --once --json")
    await wait_for(
        lambda: not in_exporter(exp, "downstream-failing", "identity"), timeout=30, what="ma_finding gone"
    )
    assert requests(exp, "identity", "5xx") == 4, "the lifetime counter stays"


@pytest.mark.slow  # a staged incident on the full stack: CI runs it in its own step
async def test_stripe_answering_503_is_downstream_failing_for_stripe_until_it_recovers(
    redis, valkey, start_pool, identity, stripe, identity_db, tmp_path
):
    invoice_id, intent_id = await paid_invoice(identity_db, stripe, 700)
    stripe.hook("POST", "/__faults", {"status": 503, "seconds": 5, "path": "/v1/"})
    start_pool(
        SYNC, MA_QUEUE_TABLE="tests.support.table:REAL_FAST", IDENTITY_BASE_URL=identity.url, **stripe.env()
    )
    job = await run_job(
        redis,
        SYNC,
        "payment.webhook",
        {
            "stripeEventId": f"evt_{invoice_id}",
            "type": "payment_intent.succeeded",
            "paymentIntentId": intent_id,
        },
        timeout=60,
    )
    assert job.returnvalue["paymentStatus"] == "paid", job.failedReason
    faults = stripe.stats()["fault 503"]
    assert faults >= 2

    def failing(window: dict[str, str] = WINDOW) -> list[dict[str, str]]:
        return about(once(valkey.url, tmp_path, **window), "downstream-failing", "stripe")

    (found,) = await wait_for(
        lambda: failing(WIDE), timeout=30, what="downstream-failing stripe in --once --json"
    )
    # every 503 the pool met is counted (each attempt, Stripe's own retries too); the double may have served a
    # few of its 503s to the slot's start-up reconcile, which then retried them on its own timer
    counted = int(re.search(r"stripe: (\d+) × 5xx in the last", found["evidence"]).group(1))
    assert 2 <= counted <= faults, (counted, faults, found["evidence"])
    assert "status.stripe.com" in found["action"]
    async with first_screen(redis, tmp_path, rate_window_s=120) as app:
        await wait_for(lambda: "stripe: stripe failing: " in pane(app), what="on ma-top's first screen")
    await wait_for(lambda: not failing(), timeout=150, what="downstream-failing stripe cleared")


@pytest.mark.slow  # a staged incident on the full stack: CI runs it in its own step
async def test_a_job_running_past_the_threshold_is_long_running_on_the_first_screen_until_it_finishes(
    redis, valkey, start_pool, tmp_path
):
    q = "identity-events"
    start_pool(q)  # the test table: test.sleep holds its slot for the given seconds
    queue = Queue(q, {"connection": redis})
    short = {"MA_TOP_LONG_RUNNING_S": "2"}
    await run_job(redis, q, "test.sleep", {"seconds": 0})  # one that finished: not active, not named
    job = await queue.add("test.sleep", {"seconds": 20})

    def long_running(**env: str) -> dict[str, Any] | None:
        snapshot = once(valkey.url, tmp_path, **env)
        return snapshot if about(snapshot, "long-running", q) else None

    snapshot = await wait_for(lambda: long_running(**short), timeout=30, what="long-running in --once --json")
    (found,) = about(snapshot, "long-running", q)
    assert found["goto"] == f"job:{q}:{job.id}"
    assert found["evidence"].startswith(f"test.sleep#{job.id} running ")
    (row,) = [x for x in snapshot["queues"] if x["name"] == q]
    assert [a["id"] for a in row["oldest_active"]] == [job.id]
    assert not long_running(), "below the default 600 s"

    async with first_screen(redis, tmp_path, long_running_s=2) as app:
        await wait_for(lambda: "LONG JOB" in badge(app, q), what="LONG JOB on the first screen")
        await completed(queue, job.id, timeout=60)
        await wait_for(lambda: "LONG JOB" not in badge(app, q), what="LONG JOB cleared on the first screen")
    await wait_for(
        lambda: not long_running(**short), timeout=30, what="long-running cleared once the job finished"
    )


@pytest.mark.slow  # a staged incident on the full stack: CI runs it in its own step
async def test_one_signature_failing_again_and_again_is_failure_growing_until_it_ages_out_of_the_window(
    redis, valkey, start_pool, tmp_path
):
    q = "identity-events"
    start_pool(q)  # the test table: test.refuse fails at once, permanently, naming the organization
    # A 30 s window: the four failures must stay in it across two `--once` runs and the screen's first refresh,
    # which take several seconds each on a busy machine.
    env = {"MA_TOP_RATE_WINDOW_S": "30", "MA_TOP_FAILURE_GROUP_GROWTH": "4"}
    for i in range(3):
        job = await run_job(redis, q, "test.refuse", {"key": f"org_{i}"})
        assert job.failedReason == f"organization org_{i} does not exist"
    assert not about(once(valkey.url, tmp_path, **env), "failure-growing", q), "3 is below 4"
    last = await run_job(redis, q, "test.refuse", {"key": "org_3"})

    (found,) = about(once(valkey.url, tmp_path, **env), "failure-growing", q)
    assert found["goto"] == f"failures:{q}" and found["cause"].startswith("4 jobs failed with one signature")
    assert f"e.g. #{last.id}: organization org_3 does not exist" in found["evidence"]

    async with first_screen(redis, tmp_path, rate_window_s=30, failure_group_growth=4) as app:
        await wait_for(lambda: "FAILING" in badge(app, q), what="FAILING on the first screen")
        await wait_for(
            lambda: "FAILING" not in badge(app, q), timeout=60, what="FAILING cleared on the first screen"
        )
    assert not about(once(valkey.url, tmp_path, **env), "failure-growing", q)
