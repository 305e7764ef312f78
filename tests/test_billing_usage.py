"""Billing: usage rollups (and the backfill CLI), invoices with PDF and renewal, Stripe charges and payment sync.

Here: usage rollups, the backfill CLI and the load-test CLI (which drains billing-usage). Invoices are in
tests/test_billing_invoice.py, payment sync in tests/test_billing_payment_sync.py; their shared fixtures in
tests/support/billing_fixtures.py.
"""

from __future__ import annotations

import subprocess
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from bullmq import Queue

from tests.support.billing_fixtures import (
    USAGE,
    billing_pool,  # noqa: F401 - fixture
    iso,
    today,
)
from tests.support.paths import BIN, ROOT
from tests.support.processes import pool_env
from tests.support.waits import run_job, wait_for


# -- usage rollups ----------------------------------------------------------------------------------------------------
async def test_rollups_equal_an_independent_aggregation_and_a_rerun_replaces(
    redis, billing_pool, identity_db
):
    start, end = today() - timedelta(days=30), today()
    billing_pool(USAGE)
    body = {
        "organizationId": "org_acme",
        "subscriptionId": "sub_acme",
        "periodStart": iso(start),
        "periodEnd": iso(end),
        "resolution": "daily",
    }
    first = await run_job(redis, USAGE, "usage.aggregate", body)
    assert first.returnvalue is not None, first.failedReason

    raw = await identity_db.fetch(
        "SELECT feature, quantity, occurred_at FROM usage_events WHERE subscription_id ="
        " 'sub_acme' AND occurred_at >= $1 AND occurred_at < $2",
        start,
        end,
    )
    reference: dict[tuple[str, datetime], list] = defaultdict(lambda: [Decimal(0), 0])
    for r in raw:
        day = r["occurred_at"].astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        reference[(r["feature"], day)][0] += r["quantity"]
        reference[(r["feature"], day)][1] += 1

    async def stored() -> dict:
        rows = await identity_db.fetch(
            "SELECT feature, bucket_start, quantity, event_count, writes FROM usage_rollups"
            " WHERE subscription_id = 'sub_acme' AND resolution = 'daily'"
            " AND bucket_start >= $1 AND bucket_start < $2",
            start,
            end,
        )
        return {
            (r["feature"], r["bucket_start"]): (r["quantity"], r["event_count"], r["writes"]) for r in rows
        }

    once = await stored()
    assert len(raw) > 100 and len(once) == len(reference)
    assert {k: list(v[:2]) for k, v in once.items()} == dict(reference.items())
    assert first.returnvalue["events"] == len(raw) and first.returnvalue["rollups"] == len(reference)

    again = await run_job(redis, USAGE, "usage.aggregate", body)
    twice = await stored()
    assert {k: v[:2] for k, v in twice.items()} == {k: v[:2] for k, v in once.items()}  # replaced, not added
    assert {v[2] for v in twice.values()} == {v[2] + 1 for v in once.values()}
    assert again.returnvalue["removed"] == 0

    # A late correction: one event gone; the re-run makes the rollup follow, and an emptied bucket disappears.
    victim = raw[0]
    await identity_db.execute(
        "DELETE FROM usage_events WHERE subscription_id = 'sub_acme' AND occurred_at = $1 AND feature = $2",
        victim["occurred_at"],
        victim["feature"],
    )
    await run_job(redis, USAGE, "usage.aggregate", body)
    fixed = await stored()
    day = victim["occurred_at"].astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    key = (victim["feature"], day)
    if reference[key][1] == 1:
        assert key not in fixed
    else:
        assert fixed[key][:2] == (reference[key][0] - victim["quantity"], reference[key][1] - 1)


async def test_bad_periods_fail_naming_the_field(redis, billing_pool):
    billing_pool(USAGE)
    base = {"organizationId": "org_acme", "subscriptionId": "sub_acme", "resolution": "daily"}
    job = await run_job(
        redis,
        USAGE,
        "usage.aggregate",
        {**base, "periodStart": "2024-08-01T10:30:00Z", "periodEnd": "2024-08-02T00:00:00Z"},
    )
    assert "periodStart must start a day (UTC) for resolution daily" in job.failedReason
    job = await run_job(
        redis,
        USAGE,
        "usage.aggregate",
        {**base, "periodStart": "2024-08-02T00:00:00Z", "periodEnd": "2024-08-01T00:00:00Z"},
    )
    assert "periodEnd must be after periodStart" in job.failedReason
    job = await run_job(
        redis,
        USAGE,
        "usage.aggregate",
        {
            **base,
            "subscriptionId": "sub_globex",
            "periodStart": "2024-08-01T00:00:00Z",
            "periodEnd": "2024-08-02T00:00:00Z",
        },
    )
    assert job.failedReason == "subscriptionId sub_globex is not in organization org_acme; refused"


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ma-worker"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


async def test_backfill_cli_enqueues_one_job_per_period_once(
    redis, valkey, db_urls, billing_pool, identity_db
):
    env = pool_env(valkey.url, db_urls)
    env.pop("MA_QUEUE_TABLE")
    args = [
        "billing",
        "backfill",
        "--org",
        "org_acme",
        "--subscription",
        "sub_acme",
        "--resolution",
        "daily",
        "--features",
        "ai.tokens",
    ]
    start, end = today() - timedelta(days=12), today() - timedelta(days=7)
    window = ["--start", start.date().isoformat(), "--end", end.date().isoformat()]

    dry = cli(*args, *window, "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "would enqueue 5 job(s)" in dry.stdout and await redis.exists("bull:billing-usage:meta") == 0

    first = cli(*args, *window, env=env)
    assert first.returncode == 0, first.stderr
    assert "enqueued 5 job(s), 0 already there" in first.stdout
    second = cli(*args, *window, env=env)
    assert "enqueued 0 job(s), 5 already there" in second.stdout
    assert await Queue(USAGE, {"connection": redis}).getJobCounts("waiting") == {"waiting": 5}

    for bad, message in (
        (
            ["--start", "2024-09-01", "--end", "2024-08-01"],
            "--end 2024-08-01 is not after --start 2024-09-01",
        ),
        (["--start", "2024-13-01", "--end", "2024-08-01"], "--start 2024-13-01 is not a date (YYYY-MM-DD)"),
    ):
        out = cli(*args, *bad, env=env)
        assert out.returncode == 2 and message in out.stderr, out.stderr
    out = cli(*[a if a != "sub_acme" else "sub_nope" for a in args], *window, env=env)
    assert out.returncode == 2 and "subscription sub_nope does not exist" in out.stderr

    billing_pool(USAGE)
    q = Queue(USAGE, {"connection": redis})
    await wait_for(lambda: _all_completed(q, 5), what="5 backfill jobs completed", timeout=30)
    rows = await identity_db.fetchval(
        "SELECT count(DISTINCT bucket_start) FROM usage_rollups WHERE subscription_id ="
        " 'sub_acme' AND resolution = 'daily' AND feature = 'ai.tokens'"
        " AND bucket_start >= $1 AND bucket_start < $2",
        start,
        end,
    )
    days_with_usage = await identity_db.fetchval(
        "SELECT count(DISTINCT date_trunc('day', occurred_at, 'UTC')) FROM usage_events WHERE subscription_id ="
        " 'sub_acme' AND feature = 'ai.tokens' AND occurred_at >= $1 AND occurred_at < $2",
        start,
        end,
    )
    assert rows == days_with_usage > 0
    backfill_ids = {j.returnvalue["backfillId"] for j in await q.getJobs(["completed"])}
    assert len(backfill_ids) == 1


async def test_backfill_with_stagger_spreads_the_periods_as_delayed_jobs_under_the_same_ids(
    redis, valkey, db_urls
):
    from pool.billing_cli import backfill_jobs

    env = pool_env(valkey.url, db_urls)
    env.pop("MA_QUEUE_TABLE")
    start, end = today() - timedelta(days=30), today() - timedelta(days=20)
    args = [
        "billing",
        "backfill",
        "--org",
        "org_acme",
        "--subscription",
        "sub_acme",
        "--start",
        start.date().isoformat(),
        "--end",
        end.date().isoformat(),
        "--resolution",
        "daily",
    ]
    expected = [job_id for job_id, _ in backfill_jobs("org_acme", "sub_acme", start, end, "daily", None)]

    dry = cli(*args, "--stagger", "1h", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "would enqueue 10 job(s) as delayed jobs, 0 already there (dry run)" in dry.stdout
    assert "schedule: 10 job(s) over 1:00:00, one every 360.0s" in dry.stdout
    assert "+0:00:00" in dry.stdout and "+0:54:00" in dry.stdout and expected[-1] in dry.stdout
    assert await redis.exists("bull:billing-usage:meta") == 0, "a dry run enqueues nothing"

    bad = cli(*args, "--stagger", "soon", env=env)
    assert bad.returncode == 2 and "--stagger 'soon' is not a duration" in bad.stderr

    first = cli(*args, "--stagger", "1h", env=env)
    assert "enqueued 10 job(s) as delayed jobs, 0 already there" in first.stdout, first.stderr
    q = Queue(USAGE, {"connection": redis})
    assert await q.getJobCounts("delayed", "waiting") == {"delayed": 9, "waiting": 1}, "the first runs now"
    delayed = await q.getJobs(["delayed", "waiting"])
    assert sorted(j.id for j in delayed) == sorted(expected), (
        "the same deterministic ids as without --stagger"
    )
    by_id = {j.id: j for j in delayed}
    assert [by_id[i].delay for i in expected] == [i * 360_000 for i in range(10)]
    due = [by_id[i].timestamp + by_id[i].delay for i in expected]
    assert due == sorted(due) and due[-1] - due[0] >= 54 * 60_000, "due in period order over the hour"

    again = cli(*args, "--stagger", "1h", env=env)
    assert "enqueued 0 job(s), 10 already there" in again.stdout, again.stdout
    plain = cli(*args, env=env)
    assert "enqueued 0 job(s), 10 already there" in plain.stdout
    assert await q.getJobCounts("delayed", "waiting") == {"delayed": 9, "waiting": 1}


async def _all_completed(q: Queue, n: int) -> bool:
    return (await q.getJobCounts("completed"))["completed"] == n


async def test_load_test_cli_reports_how_the_billing_queues_drained(redis, valkey, db_urls, billing_pool):
    billing_pool(USAGE)
    env = pool_env(valkey.url, db_urls)
    env.pop("MA_QUEUE_TABLE")
    out = cli(
        "billing",
        "load-test",
        "--org",
        "org_acme",
        "--subscription",
        "sub_acme",
        "--days",
        "3",
        "--usage-jobs",
        "25",
        "--invoices",
        "false",
        "--timeout",
        "60",
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("billing-usage"))
    assert row.split() == ["billing-usage", "25", "25", "0", "0", "0"]
    assert "jobs/s" in out.stdout
    bad = cli(
        "billing",
        "load-test",
        "--org",
        "org_acme",
        "--subscription",
        "sub_acme",
        "--invoices",
        "maybe",
        env=env,
    )
    assert bad.returncode == 2 and "expected true or false" in bad.stderr
