"""ma-top while Redis is away (stopped, killed, hung) and as it comes back, on a Valkey of the test's own: the
backlog stays on screen with its age, the header says Redis is down and keeps moving, `--once --json` says
redis-down (exit 1); once Redis answers everything is live again, with no false "no workers" while jobs run.
And queues a Node producer starts are discovered within seconds, near-miss names with a hint."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from bullmq import Queue
from redis.asyncio import Redis
from textual.widgets import DataTable, Static

from devstack import engines
from pool.contracts import HEARTBEAT_TTL, WORKERS_INDEX
from tests.support.node import node_add
from tests.support.paths import BIN
from tests.support.waits import wait_for
from tui.app import MaTop

Q = "identity-events"


def table(app: MaTop) -> dict[str, list[str]]:
    t = app.screen.query_one(DataTable)
    return {str(row[0]): [str(c) for c in row] for row in (t.get_row_at(i) for i in range(t.row_count))}


def status(app: MaTop) -> str:
    return str(app.screen.query_one("#status", Static).render())


def kinds(app: MaTop) -> set[str]:
    return {f.kind for f in app.state.findings}


def once(url: str, cwd: Path) -> tuple[int, dict[str, Any]]:
    out = subprocess.run(
        [str(BIN / "ma-top"), "--once", "--json", "--redis-url", url],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
    )
    return out.returncode, json.loads(out.stdout)


async def down_with_the_last_known_table(app: MaTop, url: str, cwd: Path, *, cause: str) -> None:
    await wait_for(lambda: "REDIS DOWN" in status(app), what="the header saying Redis is down")
    await wait_for(
        lambda: table(app).get(Q, [""] * 12)[1] == "3" and "last known" in table(app)[Q][-1],
        what="the queue's last known counts, aged",
    )
    assert "redis-down" in kinds(app) and "stale: last known" in status(app)
    await wait_for(lambda: cause in app.state.snapshot.errors.get("redis", ""), what=f"the cause: {cause}")
    before = status(app)
    await wait_for(
        lambda: status(app) != before and "REDIS DOWN" in status(app),
        what="the header's clock and age moving while Redis is down",
    )
    code, snap = await asyncio.to_thread(once, url, cwd)
    assert code == 1 and snap["redis"]["up"] is False
    assert [f["kind"] for f in snap["findings"]] == ["redis-down"]


async def live_again(app: MaTop, url: str, cwd: Path) -> None:
    await wait_for(
        lambda: "redis up" in status(app) and "stale" not in status(app), what="the header saying redis up"
    )
    await wait_for(
        lambda: "last known" not in table(app)[Q][-1] and "redis-down" not in kinds(app),
        what="live rows and the redis-down finding cleared",
    )
    assert table(app)[Q][1] == "3" and "NO WORKERS" in table(app)[Q][-1]
    code, snap = await asyncio.to_thread(once, url, cwd)
    assert code == 0 and "redis-down" not in [f["kind"] for f in snap["findings"]]


@pytest.mark.slow  # a staged incident on the full stack: CI runs it in its own step
async def test_redis_stopped_killed_and_hung_keeps_the_last_known_table_and_comes_back_live(tmp_path):
    own = engines.valkey(tmp_path / "valkey").start()
    client = Redis.from_url(own.url, decode_responses=True)
    try:
        queue = Queue(Q, {"connection": client})
        for _ in range(3):
            await queue.add("test.sleep", {"seconds": 0})
        app = MaTop(client, [], refresh_s=0.3, journal_path=tmp_path / "audit.log")
        async with asyncio.timeout(150), app.run_test(size=(160, 36)):
            await wait_for(lambda: table(app).get(Q, [""] * 2)[1] == "3", what="three waiting")
            await client.execute_command("WAITAOF", 1, 0, 5000)  # the jobs on disk before the kill below

            own.stop()
            await down_with_the_last_known_table(app, own.url, tmp_path, cause="Error")
            own.start()
            await live_again(app, own.url, tmp_path)

            assert own.proc is not None
            own.proc.kill()
            own.proc.wait()
            await down_with_the_last_known_table(app, own.url, tmp_path, cause="Error")
            own.start()
            await live_again(app, own.url, tmp_path)

            os.kill(own.proc.pid, signal.SIGSTOP)  # accepts connections, never answers
            try:
                await down_with_the_last_known_table(app, own.url, tmp_path, cause="no answer within 2s")
            finally:
                os.kill(own.proc.pid, signal.SIGCONT)
            await live_again(app, own.url, tmp_path)
    finally:
        await client.aclose()
        own.stop()


@pytest.mark.slow  # a staged incident on the full stack: CI runs it in its own step
async def test_no_false_no_workers_once_redis_is_back_and_jobs_run(start_pool, tmp_path):
    own = engines.valkey(tmp_path / "valkey").start()
    client = Redis.from_url(own.url, decode_responses=True)
    try:
        start_pool(Q, REDIS_URL=own.url)
        await wait_for(lambda: client.zcard(WORKERS_INDEX), timeout=30, what="the first heartbeat")
        own.stop()
        await asyncio.sleep(HEARTBEAT_TTL + 1)  # the outage itself: longer than a heartbeat lives
        own.start()
        await client.aclose()
        client = Redis.from_url(own.url, decode_responses=True)
        queue = Queue(Q, {"connection": client})
        for _ in range(60):  # 10 lanes: ~18 s of jobs waiting, for several --once runs of 2-3 s each
            await queue.add("test.sleep", {"seconds": 3})
        back = time.monotonic()

        def fine() -> dict[str, Any] | None:
            code, snap = once(own.url, tmp_path)
            q = next((q for q in snap["queues"] if q["name"] == Q), None)
            found = [f["kind"] for f in snap["findings"] if f["subject"] == Q]
            busy = q is not None and q["counts"]["waiting"] > 0
            return snap if code == 0 and busy and "no-workers" not in found else None

        snap = await wait_for(
            lambda: asyncio.to_thread(fine), timeout=10, what="jobs waiting, and a worker seen"
        )
        assert snap["redis"]["up"] and time.monotonic() - back < 10
        assert any(w["queue"] == Q for w in snap["workers"])
    finally:
        await client.aclose()
        own.stop()


async def test_new_queues_from_a_node_producer_show_within_seconds_with_a_near_miss_hint(
    redis, valkey, node_bullmq, tmp_path
):
    await Queue(Q, {"connection": redis}).add("test.sleep", {"seconds": 0})
    app = MaTop(redis, [], refresh_s=0.3, journal_path=tmp_path / "audit.log")
    async with asyncio.timeout(90), app.run_test(size=(160, 40)):
        await wait_for(lambda: Q in table(app), what="the first queue on screen")
        for name in ("crm-sync", "billing-usgae"):
            job = [{"name": "x.sync", "data": {"accountId": "acc_1"}}]
            await asyncio.to_thread(node_add, node_bullmq, valkey.url, name, job)
        # the old discovery ran every 60 s: well within that, both must be on screen
        await wait_for(
            lambda: all("NO HANDLER" in table(app).get(n, [""])[-1] for n in ("crm-sync", "billing-usgae")),
            timeout=20,
            what="both new queues flagged NO HANDLER",
        )
        (miss,) = [f for f in app.state.findings if f.kind == "no-handler" and f.subject == "billing-usgae"]
        assert "did you mean `billing-usage`" in miss.cause
        (new,) = [f for f in app.state.findings if f.kind == "no-handler" and f.subject == "crm-sync"]
        assert "did you mean" not in new.cause
        assert "did you mean `billing-usage`" in str(app.screen.query_one("#findings", Static).render())


def test_state_keeps_the_last_answered_queues_aged_while_redis_is_down_and_drops_them_when_it_answers():
    from pool.monitor.snapshot import RedisHealth, Snapshot
    from tests.support.fake_source import T0, queue_stats
    from tui.format import last_known
    from tui.state import TopState

    state = TopState()
    up = Snapshot(T0, (queue_stats(Q, waiting=3),), (), RedisHealth(True))
    state.set_snapshot(up)
    assert state.snapshot is up and last_known(up) == ""

    def down(at: float) -> Snapshot:
        return Snapshot(
            at, (), (), RedisHealth(False, error="refused"), {"redis": "ConnectionError: refused"}
        )

    state.set_snapshot(down(T0 + 12))
    shown = state.snapshot
    assert shown is not None and shown.known_at == T0 and shown.queues[0].counts["waiting"] == 3
    assert last_known(shown) == "last known 12s ago" and shown.errors == {"redis": "ConnectionError: refused"}
    state.set_snapshot(down(T0 + 42))  # still the snapshot of T0, older now
    assert state.snapshot is not None and last_known(state.snapshot) == "last known 42s ago"

    back = Snapshot(T0 + 45, (queue_stats(Q, waiting=1),), (), RedisHealth(True))
    state.set_snapshot(back)
    assert state.snapshot is back and state.snapshot.known_at is None

    fresh = TopState()  # down from the start: nothing known, nothing invented
    fresh.set_snapshot(down(T0))
    assert fresh.snapshot is not None and fresh.snapshot.queues == () and fresh.snapshot.known_at is None
