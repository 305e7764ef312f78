"""Findings on the real stack: each incident staged on Valkey (and a pool process), then read the ways an on-call
engineer reads it, `ma-top --once [--json]` and the exporter's `ma_finding`, which must agree; then the cause is
removed and the finding must clear by itself in both."""

from __future__ import annotations

import pytest
from bullmq import Queue

from devstack import engines
from pool.supervise import supervisord_env
from tests.support.exporter import Exporter, value
from tests.support.processes import pool_env
from tests.support.supervisord import Supervisord
from tests.support.top import about, once
from tests.support.waits import run_job, wait_for


def finding_metric(exp: Exporter, kind: str, subject: str, severity: str) -> float | None:
    return value(exp.scrape(), "ma_finding", kind=kind, subject=subject, severity=severity)


async def test_waiting_jobs_and_no_pool_are_no_workers_everywhere_until_a_pool_starts(
    redis, valkey, start_pool, exporter, tmp_path
):
    q = "identity-events"
    await Queue(q, {"connection": redis}).add("test.sleep", {"seconds": 0})
    (found,) = about(once(valkey.url, tmp_path), "no-workers", q)
    assert found["severity"] == "critical" and "waiting 1" in found["evidence"]
    assert found["cause"].startswith("no worker: ") and "ma-top 3" in found["action"]
    assert f"CRITICAL {q}: no worker: " in once(valkey.url, tmp_path, as_json=False)
    exp = exporter()
    await wait_for(
        lambda: finding_metric(exp, "no-workers", q, "critical") == 1, what="ma_finding no-workers"
    )

    start_pool(q)

    def cleared() -> bool:
        snapshot = once(valkey.url, tmp_path)
        return not about(snapshot, "no-workers", q) and any(x["name"] == q for x in snapshot["queues"])

    await wait_for(cleared, timeout=30, what="no-workers gone from --once --json")
    await wait_for(lambda: finding_metric(exp, "no-workers", q, "critical") is None, what="ma_finding gone")


async def test_jobs_on_a_misspelt_queue_are_no_handler_with_did_you_mean_everywhere_until_removed(
    redis, valkey, exporter, tmp_path
):
    typo = Queue("billing-usgae", {"connection": redis})
    await typo.add("usage.aggregate", {"organizationId": "org_acme"})
    (found,) = about(once(valkey.url, tmp_path), "no-handler", "billing-usgae")
    assert "did you mean `billing-usage`?" in found["cause"] and found["severity"] == "warning"
    assert not about(once(valkey.url, tmp_path), "no-workers", "billing-usgae"), "the cause is the name"
    exp = exporter()
    assert finding_metric(exp, "no-handler", "billing-usgae", "warning") == 1

    await typo.obliterate(force=True)

    await wait_for(
        lambda: not about(once(valkey.url, tmp_path), "no-handler", "billing-usgae"), what="no-handler gone"
    )
    await wait_for(
        lambda: finding_metric(exp, "no-handler", "billing-usgae", "warning") is None, what="ma_finding gone"
    )


async def test_no_workers_names_a_stopped_program_from_supervisord_until_it_is_started(
    valkey, redis, db_urls, exporter, tmp_path
):
    q = "identity-events"
    (tmp_path / "host-a").mkdir()
    env = pool_env(valkey.url, db_urls, MA_EXPORTER_PORT=str(engines.free_port()))
    sup = Supervisord(tmp_path / "host-a", supervisord_env(env))
    endpoint = f"unix://{tmp_path}/host-a/var/supervisor.sock"
    try:
        sup.wait_all_running()
        sup.rpc.supervisor.stopProcessGroup(q)
        await Queue(q, {"connection": redis}).add("test.sleep", {"seconds": 0})

        def no_workers() -> list[dict[str, str]]:
            return about(once(valkey.url, tmp_path, supervisor=endpoint), "no-workers", q)

        (found,) = await wait_for(no_workers, what="no-workers (the stopped slot retired its heartbeat)")
        assert "1 process(es) STOPPED on host-a" in found["cause"]
        assert f"supervisorctl -c supervisord.conf start {q}:*" in found["action"]
        exp = exporter(MA_SUPERVISOR_URLS=endpoint)
        await wait_for(lambda: finding_metric(exp, "no-workers", q, "critical") == 1, what="ma_finding")

        sup.rpc.supervisor.startProcessGroup(q)

        await wait_for(lambda: not no_workers(), timeout=30, what="no-workers gone")
        await wait_for(
            lambda: finding_metric(exp, "no-workers", q, "critical") is None, what="ma_finding gone"
        )
    finally:
        sup.stop()


@pytest.mark.slow  # a staged incident on the full stack: CI runs it in its own step
async def test_retries_are_a_rate_in_the_exporter_and_once_and_clear_while_the_lifetime_counter_stays(
    redis, valkey, start_pool, exporter, tmp_path
):
    q = "identity-events"
    exp = exporter(MA_TOP_RATE_WINDOW_S="15")  # a short window, so the test sees it pass
    start_pool(q)
    for i in range(4):  # two failed attempts each: 8 retries, over 5/min
        job = await run_job(redis, q, "test.flaky", {"key": f"k{i}", "succeedOnAttempt": 3}, attempts=3)
        assert job.returnvalue == {"attempt": 3}

    await wait_for(
        lambda: finding_metric(exp, "retries", q, "warning") == 1, timeout=30, what="ma_finding retries"
    )
    # a one-shot run has no history of its own: the rate comes from the pool's recent counts in Redis
    (found,) = about(once(valkey.url, tmp_path, MA_TOP_RATE_WINDOW_S="15"), "retries", q)
    assert " retries in the last " in found["evidence"] and found["goto"] == f"events:retry {q}", found

    await wait_for(
        lambda: finding_metric(exp, "retries", q, "warning") is None,
        timeout=40,
        what="retries finding cleared",
    )
    assert value(exp.scrape(), "ma_queue_retries_total", queue=q) == 8, "the lifetime counter stays"
    assert not about(once(valkey.url, tmp_path, MA_TOP_RATE_WINDOW_S="15"), "retries", q)
