"""The pool as production runs it: supervisord.conf (unchanged) starting every queue's slots."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from bullmq import Queue
from redis.asyncio import Redis

from devstack import engines
from tests.support.node import node_add
from tests.support.paths import BIN
from tests.support.supervisord import Supervisord, host
from tests.support.waits import completed, wait_for

Q = "identity-events"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, db_urls) -> Iterator[tuple[Supervisord, engines.Engine]]:
    yield from host(tmp_path_factory.mktemp("host"), db_urls, MA_PROCS_IDENTITY_EVENTS="2")


@pytest.fixture
async def sredis(stack) -> Any:
    client = Redis.from_url(stack[1].url, decode_responses=True)
    yield client
    await client.aclose()


def test_every_queue_has_its_programs_running_and_supervisorctl_reads_the_conf(stack):
    sup, _ = stack
    names = sorted(p["group"] + ":" + p["name"] for p in sup.processes())
    assert "identity-events:identity-events_00" in names and "identity-events:identity-events_01" in names
    assert "super-admin.bulk-job:super-admin.bulk-job_00" in names
    assert len(names) == 10  # billing-usage defaults to 2 slots, identity-events set to 2 here, the exporter
    out = subprocess.run(
        [str(BIN / "supervisorctl"), "-c", str(sup.conf), "status"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.stdout.count("RUNNING") == 10, out.stdout
    mode = stat.S_IMODE((sup.home / "var" / "supervisor.sock").stat().st_mode)
    assert mode & 0o077 == 0, f"control socket must be owner-only, is {oct(mode)}"


@pytest.mark.slow  # a staged incident on the full stack: CI runs it in its own step
async def test_a_job_from_a_node_producer_is_processed_by_a_supervisord_started_process(
    stack, sredis, node_bullmq, tasks_db
):
    sup, valkey = stack
    (job_id,) = node_add(node_bullmq, valkey.url, Q, [{"name": "test.effect", "data": {"key": "from-node"}}])
    job = await completed(Queue(Q, {"connection": sredis}), job_id)
    pids = {p["pid"] for p in sup.processes() if p["group"] == Q}
    assert job.returnvalue["pid"] in pids
    assert await tasks_db.fetchval("SELECT count(*) FROM test_effects WHERE key = 'from-node'") == 1


async def test_sigkill_during_a_job_reruns_it_after_the_stall_interval_and_the_effect_happens_once(
    stack, sredis, tasks_db
):
    queue = Queue(Q, {"connection": sredis})
    job = await queue.add("test.effect", {"key": "killed", "sleepSeconds": 5}, {"attempts": 3})
    await wait_for(
        lambda: tasks_db.fetchval("SELECT pid FROM test_attempts WHERE key = 'killed'"),
        what="first attempt started",
    )
    victim = await tasks_db.fetchval("SELECT pid FROM test_attempts WHERE key = 'killed'")
    os.kill(victim, signal.SIGKILL)
    await completed(queue, job.id, timeout=45)
    attempts = await tasks_db.fetch("SELECT pid FROM test_attempts WHERE key = 'killed' ORDER BY at")
    assert len(attempts) == 2 and attempts[1]["pid"] != victim
    assert await tasks_db.fetchval("SELECT count(*) FROM test_effects WHERE key = 'killed'") == 1

    async def stalled_event() -> bool:
        return any(
            f.get("kind") == "stalled" and f.get("jobId") == job.id
            for _, f in await sredis.xrange("ma:events")
        )

    await wait_for(stalled_event, what="stall reported on ma:events")
    sup, _ = stack
    await wait_for(sup.all_running, what="supervisord restarted the killed slot")


async def test_redis_down_for_10s_ends_no_process_and_new_jobs_run_after_it_returns(stack, sredis):
    sup, valkey = stack
    before = {p["name"]: p["pid"] for p in sup.processes()}
    valkey.stop()
    # The outage lasting 10 s is the point: every second of it, every process is still RUNNING.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        states = {p["statename"] for p in sup.processes()}
        assert states <= {"RUNNING"}, f"a process left RUNNING during the outage: {states}"
        await asyncio.sleep(1)
    valkey.start()
    queue = Queue(Q, {"connection": sredis})
    job = await queue.add("test.sleep", {"seconds": 0})
    await completed(queue, job.id, timeout=60)
    after = sup.processes()
    assert all(p["statename"] == "RUNNING" for p in after)
    assert {p["name"]: p["pid"] for p in after} == before, "no slot crashed or was restarted"
    log = sup.home / "var" / "log" / "identity-events_00.log"
    await wait_for(lambda: "Redis connection recovered" in log.read_text(), what="recovery logged")
    assert "Redis connection failed" in log.read_text()

    async def outage_events() -> set[str]:
        kinds = {f.get("kind") for _, f in await sredis.xrange("ma:events")}
        return {"redis-connection-error", "redis-recovered"} <= kinds and kinds

    await wait_for(outage_events, what="outage and recovery on ma:events")
