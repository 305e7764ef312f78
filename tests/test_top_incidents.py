"""Runbook incidents staged on the real stack and read as an on-call engineer reads them: ma-top's first screen
(under Pilot, over the live data source) and `ma-top --once --json`; each finding must clear by itself once the
incident is over."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from bullmq import Queue

from pool.monitor.findings import Thresholds
from tests.support.waits import settle, wait_for
from tests.test_top_app import rows
from tests.test_top_findings_stack import about, once
from tui.app import MaTop

USAGE = "billing-usage"


def _day(days_ago: int) -> tuple[str, str]:
    lo = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days_ago)
    return lo.isoformat().replace("+00:00", "Z"), (lo + timedelta(days=1)).isoformat().replace("+00:00", "Z")


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
