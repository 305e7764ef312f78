"""The incident report on the real stack: an incident staged on Valkey, supervisord and pool processes, an operator
acting on it as ma-top does, then `ma-top --report` run as its own process and read as the incident review reads
it. Also: Redis down (the report says so and still holds what is known), and secrets (never in the report)."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from devstack import engines
from pool.monitor.actions import Journal
from pool.monitor.source import LiveSource
from pool.supervise import supervisord_env
from tests.support.processes import SERVICE_KEY, pool_env
from tests.support.supervisord import Supervisord
from tests.support.top import report, report_section
from tests.support.waits import run_job, wait_for

Q = "identity-events"
SLOT = f"{Q}:{Q}_00"


@pytest.mark.slow  # a staged incident on the full stack: CI runs it in its own step
async def test_a_report_during_a_failure_storm_holds_the_finding_the_group_with_a_trace_the_requeue_and_restarts(
    redis, valkey, db_urls, tmp_path: Path
):
    (tmp_path / "host-a").mkdir()
    env = pool_env(valkey.url, db_urls, MA_EXPORTER_PORT=str(engines.free_port()))
    sup = Supervisord(tmp_path / "host-a", supervisord_env(env))
    endpoint = f"unix://{tmp_path}/host-a/var/supervisor.sock"
    try:
        sup.wait_all_running(timeout=60)
        # given: jobs failing with one signature (test.refuse: `organization <key> does not exist`)
        failed = [(await run_job(redis, Q, "test.refuse", {"key": f"org_{i}"})).id for i in range(4)]
        # and an operator restarting a slot and requeueing two of the jobs, as ma-top does (journaled)
        sup.rpc.supervisor.stopProcess(SLOT)
        sup.rpc.supervisor.startProcess(SLOT)
        source = LiveSource(redis, [endpoint], journal_path=tmp_path / "audit.log")
        done, _skipped = await source.requeue(Q, failed[:2])
        await source.journal("requeue", Q, failed[:2], f"requeued {done}")
        for job_id in failed[:2]:  # the requeued jobs fail again
            await wait_for(
                lambda job_id=job_id: redis.zscore(f"bull:{Q}:failed", job_id), what=f"{job_id} failed again"
            )

        # when: the report is written
        text = report(
            valkey.url,
            tmp_path,
            tmp_path / "out" / "incident.md",
            supervisor=endpoint,
            MA_TOP_FAILURE_GROUP_GROWTH="4",
        )
    finally:
        sup.stop()

    # then: every section says when it was read, and none says it could not read
    assert text.startswith("# Incident report ") and "(the last 2 h)" in text
    for title in (
        "Queues",
        "Findings",
        "Top failure groups",
        "Recent events (coalesced)",
        "Processes and restarts",
        "Redis health",
        "Operator actions (audit journal)",
    ):
        part = report_section(text, title)
        assert "\nRead 20" in part and "Could not read" not in part, part
    queues = report_section(text, "Queues")
    assert "redis up" in queues and any(line.startswith(Q) for line in queues.splitlines()), queues
    findings = report_section(text, "Findings")
    assert f"WARNING  {Q}: " in findings and "failed with one signature" in findings, findings
    group = report_section(text, "Top failure groups")
    assert f"### 1. {Q}: 4 job(s), `organization <id> does not exist`" in group, group
    (sample,) = [line for line in group.splitlines() if line.startswith("- sample job ids")][:1]
    assert set(sample.split(": ", 1)[1].split(", ")) == set(failed), sample
    trace = group.split("```text\n", 1)[1].split("```", 1)[0]  # the first group's stack trace
    assert (
        trace.startswith("Traceback (most recent call last):")
        and "UnrecoverableError: organization org_" in trace
    )
    events = report_section(text, "Recent events (coalesced)")
    assert "| first | last | kind |" in events
    procs = report_section(text, "Processes and restarts")
    assert f"| {SLOT} | host-a | RUNNING |" in procs, procs
    assert f"- {SLOT} on host-a: exited " in procs and "started again" in procs, procs
    assert "Redis health" in text and "- up, version " in report_section(text, "Redis health")
    actions = report_section(text, "Operator actions (audit journal)")
    assert "Read from `ma:audit`." in actions, actions
    assert f"| requeue | {Q} | 2: {failed[0]}, {failed[1]} | requeued 2 |" in actions, actions


async def test_with_redis_down_the_report_says_redis_is_unreachable_and_still_lists_the_local_journal(
    tmp_path: Path,
):
    dead = f"redis://127.0.0.1:{engines.free_port()}"
    journal = Journal(Redis.from_url(dead), tmp_path / "var" / "ma-top-audit.log")  # ma-top's default path
    try:
        await journal.write("pause", "billing-usage", outcome="paused")
    except RedisConnectionError:
        pass  # the stream is down: the local file still has the action (what the report falls back to)
    finally:
        await journal.redis.aclose()

    text = report(dead, tmp_path, tmp_path / "incident.md")

    assert "- Redis: **unreachable** (" in text
    assert "Redis did not answer: no queue could be read." in report_section(text, "Queues")
    assert "Redis is **unreachable**: " in report_section(text, "Redis health")
    assert "Not read: Redis did not answer." in report_section(text, "Top failure groups")
    assert "CRITICAL redis: Redis unreachable since " in report_section(text, "Findings")
    actions = report_section(text, "Operator actions (audit journal)")
    assert "Could not read: ma:audit" in actions and "this host's actions only" in actions, actions
    assert "| pause | billing-usage | - | paused |" in actions, actions


async def test_a_secret_in_job_data_or_a_failed_reason_never_reaches_the_report(
    redis, valkey, start_pool, tmp_path
):
    start_pool(Q)
    secrets = {
        "stripe": "sk_live_report4242secret",
        "named": "tok-report-secret-77",
        "env": SERVICE_KEY,  # no shape of its own: known as the value of SUPABASE_SERVICE_ROLE_KEY
        "data": "whsec_data_only_secret",
    }
    ids = [
        (await run_job(redis, Q, "test.refuse", {"key": secrets["stripe"]})).id,
        (await run_job(redis, Q, "test.refuse", {"key": f"token={secrets['named']}"})).id,
        (await run_job(redis, Q, "test.refuse", {"key": secrets["env"]})).id,
        (await run_job(redis, Q, "test.refuse", {"key": "org_a", "stripeSecret": secrets["data"]})).id,
    ]
    job = await run_job(redis, Q, "test.refuse", {"key": secrets["stripe"]})
    assert secrets["stripe"] in job.failedReason and secrets["stripe"] in job.stacktrace[-1], (
        "the staging holds"
    )

    text = report(valkey.url, tmp_path, tmp_path / "incident.md", SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY)

    assert [name for name, secret in secrets.items() if secret in text] == []
    group = report_section(text, "Top failure groups")
    assert "organization *** does not exist" in group and "token=***" in group, group
    sampled = {
        job_id
        for line in group.splitlines()
        if line.startswith("- sample job ids")
        for job_id in line.split(": ", 1)[1].split(", ")
    }
    assert sampled >= {*ids, job.id}, "masked, the groups and their sample ids are still there"
