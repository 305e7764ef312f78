"""Two hosts (two supervisord instances, each with its own config and state directory) on one Redis."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from bullmq import Queue
from textual.widgets import DataTable

from devstack import engines
from pool.supervise import supervisord_env
from tests.support.node import node_add
from tests.support.processes import pool_env
from tests.support.supervisord import Supervisord
from tests.support.top import rows
from tests.support.waits import wait_for
from tui.app import MaTop
from tui.screens.processes import ProcessesScreen

ENDPOINT = ProcessesScreen.COLUMNS.index("endpoint")

pytestmark = pytest.mark.slow
Q = "identity-events"


def kill_host(sup: Supervisord) -> list[int]:
    """The whole host at once: every pool process and supervisord itself, SIGKILL (no graceful anything)."""
    pids = [p["pid"] for p in sup.processes() if p["pid"]]
    for pid in [*pids, sup.proc.pid]:
        os.kill(pid, signal.SIGKILL)
    sup.proc.wait(10)
    return pids


async def test_two_hosts_share_the_work_a_lost_host_loses_nothing_and_ma_top_controls_both(
    valkey, redis, db_urls, tasks_db, tmp_path: Path, node_bullmq: Path
):
    env = pool_env(valkey.url, db_urls, MA_PROCS_IDENTITY_EVENTS="2")  # test handlers, 4 s locks
    hosts: dict[str, Supervisord] = {}
    try:
        for name in ("host-a", "host-b"):
            (tmp_path / name).mkdir()
            hosts[name] = Supervisord(
                tmp_path / name, supervisord_env({**env, "MA_EXPORTER_PORT": str(engines.free_port())})
            )
        for sup in hosts.values():
            await wait_for(sup.all_running, timeout=40, what="every program RUNNING")
        endpoints = [f"unix://{tmp_path}/{name}/var/supervisor.sock" for name in hosts]

        # ma-top with both endpoints: every process of both hosts, and a restart reaches host-b.
        app = MaTop(redis, endpoints, refresh_s=0.3, journal_path=tmp_path / "audit.log")
        async with asyncio.timeout(90), app.run_test(size=(160, 50)) as pilot:
            await pilot.press("3")
            total = sum(len(sup.processes()) for sup in hosts.values())
            await wait_for(lambda: len(rows(app)) == total == 20, what="both hosts' processes listed")
            assert {r[ENDPOINT] for r in rows(app)} == {"host-a", "host-b"}
            table = app.screen.query_one(DataTable)
            for _ in range(total):  # at most one pass over the table
                if rows(app)[table.cursor_row][ENDPOINT] == "host-b":
                    break
                await pilot.press("down")
            assert rows(app)[table.cursor_row][ENDPOINT] == "host-b", (
                "no row of host-b reached with the cursor"
            )
            name, before = rows(app)[table.cursor_row][0], int(rows(app)[table.cursor_row][2])
            await pilot.press("s")
            await wait_for(
                lambda: hosts["host-b"].pid(name) not in (None, before), timeout=30, what="restarted on B"
            )
            assert hosts["host-a"].pid(name) is not None, "host-a's process of that name is untouched"

        # Jobs from a Node producer spread over both hosts; then host-a dies whole, mid-run.
        jobs = [
            {"name": "test.effect", "data": {"key": f"mh-{i}", "sleepSeconds": 1.0}, "opts": {"attempts": 3}}
            for i in range(400)
        ]
        ids = node_add(node_bullmq, valkey.url, Q, jobs)
        pids = {name: {p["pid"] for p in sup.processes()} for name, sup in hosts.items()}
        await wait_for(
            lambda: _count(tasks_db, "SELECT count(*) FROM test_effects WHERE key LIKE 'mh-%'", 120),
            timeout=60,
            what="a third of the work done",
        )
        killed = kill_host(hosts["host-a"])
        queue = Queue(Q, {"connection": redis})
        await wait_for(lambda: _all_completed(queue, ids), timeout=120, what="every job completed on host-b")

        effects = await tasks_db.fetchval("SELECT count(*) FROM test_effects WHERE key LIKE 'mh-%'")
        assert effects == 400  # nothing lost (one row per key: the table's primary key)
        by_pid = await tasks_db.fetch(
            "SELECT pid, count(DISTINCT key) AS n FROM test_attempts WHERE key LIKE 'mh-%' GROUP BY pid"
        )
        done_by = {name: sum(r["n"] for r in by_pid if r["pid"] in pids[name]) for name in hosts}
        assert done_by["host-a"] > 0 and done_by["host-b"] > 0, done_by  # the work was spread
        rerun = await tasks_db.fetchval(
            "SELECT count(*) FROM (SELECT key FROM test_attempts WHERE key LIKE 'mh-%'"
            " GROUP BY key HAVING count(*) > 1) k"
        )
        assert 0 < rerun <= 40, "only what host-a had in flight ran again (2 slots x concurrency)"
        assert killed and all(p["statename"] == "RUNNING" for p in hosts["host-b"].processes())
    finally:
        for sup in hosts.values():
            if sup.proc.poll() is None:
                sup.stop()


async def _count(conn, sql: str, at_least: int) -> bool:
    return await conn.fetchval(sql) >= at_least


async def _all_completed(queue: Queue, ids: list[str]) -> bool:
    states = [await queue.getJobState(i) for i in ids[-50:]] + [await queue.getJobState(i) for i in ids[:50]]
    if any(s != "completed" for s in states):
        return False
    return all([await queue.getJobState(i) == "completed" for i in ids])
