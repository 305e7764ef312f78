"""`ma-worker scale`: one queue's process count in a running supervisord (the repository's supervisord.conf),
without restarting any other program; a scale-down lets the in-flight jobs finish."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from bullmq import Queue
from redis.asyncio import Redis

from tests.support.paths import BIN
from tests.support.processes import pool_env
from tests.support.supervisord import Supervisord, host
from tests.support.waits import completed, poll, wait_for

Q = "identity-events"


@pytest.fixture
def stack(tmp_path: Path, db_urls: Any) -> Any:
    yield from host(tmp_path, db_urls)  # identity-events at its default: 1 slot


def scale(sup: Supervisord, redis_url: str, db_urls: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ma-worker"), "scale", *args, "-c", str(sup.conf)],
        env=pool_env(redis_url, db_urls),
        cwd=sup.home,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def pids(sup: Supervisord, *, of: str | None = None, but: str | None = None) -> dict[str, int]:
    return {
        f"{p['group']}:{p['name']}": p["pid"]
        for p in sup.processes()
        if p["statename"] == "RUNNING" and (of is None or p["group"] == of) and p["group"] != but
    }


@pytest.mark.slow  # a staged incident on the full stack: CI runs it in its own step
async def test_scale_up_then_down_while_jobs_run_touches_no_other_program_and_lets_the_jobs_finish(
    stack, db_urls
):
    sup, valkey = stack
    others = pids(sup, but=Q)
    assert len(pids(sup, of=Q)) == 1 and len(others) >= 8

    listed = scale(sup, valkey.url, db_urls)
    assert listed.returncode == 0, listed.stderr
    (row,) = [ln for ln in listed.stdout.splitlines() if ln.startswith(Q + " ")]
    assert row.split() == [Q, "1", "1", "MA_PROCS_IDENTITY_EVENTS"]

    up = scale(sup, valkey.url, db_urls, Q, "3")
    assert up.returncode == 0, up.stderr
    assert f"{Q}: 1 -> 3 process(es)" in up.stdout
    poll(lambda: len(pids(sup, of=Q)) == 3, timeout=30, every=0.3, what="3 identity-events slots RUNNING")
    assert pids(sup, but=Q) == others, "no other program restarted"
    (row,) = [ln for ln in scale(sup, valkey.url, db_urls).stdout.splitlines() if ln.startswith(Q + " ")]
    assert row.split() == [Q, "3", "3", "var/scale.d/identity-events.conf"]

    redis = Redis.from_url(valkey.url, decode_responses=True)
    queue = Queue(Q, {"connection": redis})
    try:
        jobs = [await queue.add("test.sleep", {"seconds": 4}, {"attempts": 1}) for _ in range(3)]

        async def all_active() -> bool:
            return (await queue.getJobCounts("active"))["active"] == 3

        await wait_for(all_active, timeout=20, what="three 4-second jobs in flight")
        down = scale(sup, valkey.url, db_urls, Q, "1")
        returned_ms = time.time() * 1000
        assert down.returncode == 0, down.stderr
        assert f"{Q}: 3 -> 1 process(es)" in down.stdout
        for job in jobs:
            done = await completed(queue, job.id, timeout=30)
            assert done.returnvalue == {"slept": 4} and done.attemptsMade == 1
            # finished while its slot stopped (the scale returns once the old slots are gone), not cut off
            # and re-run after the stall check
            assert done.finishedOn <= returned_ms
        assert (await queue.getJobCounts("failed"))["failed"] == 0
    finally:
        await redis.aclose()
    poll(lambda: len(pids(sup, of=Q)) == 1, timeout=30, every=0.3, what="1 identity-events slot RUNNING")
    assert pids(sup, but=Q) == others, "no other program restarted"

    again = scale(sup, valkey.url, db_urls, Q, "1")
    assert again.returncode == 0 and "already 1 process(es); nothing restarted" in again.stdout
    bad = scale(sup, valkey.url, db_urls, "identity-event", "2")
    assert bad.returncode == 2 and "unknown queue 'identity-event'" in bad.stderr
