"""Runbook incidents staged on the real stack and read as an on-call engineer reads them: ma-top's first screen
(under Pilot, over the live data source) and `ma-top --once --json`; each finding must clear by itself once the
incident is over."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from bullmq import Queue

from devstack import engines
from pool.monitor.findings import Thresholds
from pool.settings import EX_CONFIG
from pool.supervise import supervisord_env
from tests.support.processes import pool_env
from tests.support.supervisord import Supervisord
from tests.support.top import about, badge, first_screen, once, rows
from tests.support.waits import settle, wait_for
from tui.app import MaTop

USAGE = "billing-usage"


def _day(days_ago: int) -> tuple[str, str]:
    lo = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days_ago)
    return lo.isoformat().replace("+00:00", "Z"), (lo + timedelta(days=1)).isoformat().replace("+00:00", "Z")


@pytest.mark.slow  # a staged incident on the full stack: CI runs it in its own step
async def test_identity_429s_are_throttled_on_the_first_screen_and_in_once_until_they_stop(
    redis, valkey, start_real_pool, identity, tmp_path
):
    window = "20"
    start_real_pool(USAGE)
    identity.hook("POST", "/__faults", {"status": 429, "seconds": 6, "path": "/v1/", "retryAfter": 1})
    queue = Queue(USAGE, {"connection": redis})
    jobs = []
    for day in range(1, 4):
        lo, hi = _day(day)
        data = {
            "organizationId": "org_acme",
            "subscriptionId": "sub_acme",
            "periodStart": lo,
            "periodEnd": hi,
            "resolution": "hourly",
        }
        jobs.append(await queue.add("usage.aggregate", data))

    app = MaTop(
        redis, [], refresh_s=0.3, journal_path=tmp_path / "audit.log", thresholds=Thresholds(rate_window_s=20)
    )
    async with asyncio.timeout(120), app.run_test(size=(160, 40)):

        def badge() -> str:
            return next((r[-1] for r in rows(app) if r[0] == USAGE), "")

        await wait_for(lambda: "THROTTLED" in badge(), timeout=30, what="THROTTLED on billing-usage's row")
        (found,) = about(once(valkey.url, tmp_path, MA_TOP_RATE_WINDOW_S=window), "throttled", USAGE)
        assert "jobs deferred by identity 429s" in found["cause"] and found["severity"] == "info", found

        for job in jobs:  # the fault ends after its 6 s; every job then runs, on its first attempt
            done = await settle(redis, USAGE, job.id, timeout=60)
            assert done.returnvalue is not None and done.attemptsMade == 1, done.failedReason

        await wait_for(lambda: "THROTTLED" not in badge(), timeout=45, what="THROTTLED cleared")
        assert not about(once(valkey.url, tmp_path, MA_TOP_RATE_WINDOW_S=window), "throttled", USAGE)


@pytest.mark.slow  # a staged incident on the full stack: CI runs it in its own step
async def test_slots_that_crash_at_start_are_no_workers_naming_fatal_and_the_exit_status_until_fixed(
    valkey, redis, db_urls, tmp_path
):
    q = "identity-events"
    await Queue(q, {"connection": redis}).add("test.sleep", {"seconds": 0})
    env = pool_env(valkey.url, db_urls, MA_EXPORTER_PORT=str(engines.free_port()))
    broken = {k: v for k, v in env.items() if k != "SUPABASE_SERVICE_ROLE_KEY"}  # every slot exits at start
    (tmp_path / "host-a").mkdir()
    sup = Supervisord(tmp_path / "host-a", supervisord_env(broken))
    endpoint = f"unix://{tmp_path}/host-a/var/supervisor.sock"
    try:

        def crashing() -> list[dict[str, str]]:
            found = about(once(valkey.url, tmp_path, supervisor=endpoint), "no-workers", q)
            # FATAL once supervisord gives up; a slot that dies after `startsecs` (a slow start-up on a loaded
            # machine) is restarted for ever instead, and said so
            causes = ("FATAL on host-a", "BACKOFF on host-a", "exit status", "restarted, no heartbeat yet")
            return found if found and any(c in found[0]["cause"] for c in causes) else []

        (found,) = await wait_for(crashing, timeout=90, what="no-workers naming the crashing slot")
        if "FATAL" in found["cause"] or "BACKOFF" in found["cause"]:
            assert f"exit status {EX_CONFIG}" in found["cause"], found["cause"]
        assert f"supervisorctl -c supervisord.conf tail {q}:" in found["action"], found["action"]
        assert found["goto"] == f"process:{q}"
    finally:
        sup.stop()

    (tmp_path / "host-b").mkdir()  # the configuration fixed, supervisord started again
    sup = Supervisord(tmp_path / "host-b", supervisord_env(env))
    fixed = f"unix://{tmp_path}/host-b/var/supervisor.sock"
    try:
        await wait_for(
            lambda: not about(once(valkey.url, tmp_path, supervisor=fixed), "no-workers", q),
            timeout=60,
            what="no-workers cleared once the slots run",
        )
    finally:
        sup.stop()


@pytest.mark.slow  # a staged incident on the full stack: CI runs it in its own step
async def test_arrivals_above_what_the_slots_finish_are_a_growing_backlog_until_they_stop(
    redis, valkey, start_pool, tmp_path
):
    q = "task-notifications"
    window = {"MA_TOP_RATE_WINDOW_S": "40"}
    start_pool(q)
    queue = Queue(q, {"connection": redis})

    async def flood() -> None:
        while True:  # far more than the slot's concurrency finishes of 5 s jobs
            await queue.addBulk([{"name": "test.sleep", "data": {"seconds": 5}} for _ in range(10)])
            await asyncio.sleep(1)

    producer = asyncio.ensure_future(flood())
    try:
        (found,) = await wait_for(
            lambda: about(once(valkey.url, tmp_path, **window), "backlog-growing", q),
            timeout=90,
            what="backlog-growing in --once --json",
        )
        assert "ETA ∞" in found["cause"] and "/min arrive" in found["cause"], found
        async with first_screen(redis, tmp_path, rate_window_s=40) as app:
            await wait_for(lambda: "GROWING" in badge(app, q), what="GROWING on the first screen")
            producer.cancel()
            await queue.obliterate({"force": True})  # the flood is dropped: nothing arrives, nothing waits
            await wait_for(lambda: "GROWING" not in badge(app, q), timeout=60, what="GROWING cleared")
    finally:
        producer.cancel()
    assert not about(once(valkey.url, tmp_path, **window), "backlog-growing", q)
