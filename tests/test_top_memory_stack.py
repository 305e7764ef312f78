"""Memory across hosts on the real stack: a pool process's heartbeat carries its RSS, CPU and RSS trail, the
collector reads them, the exporter serves them, and a handler that keeps allocating is a memory-growth finding
on ma-top's first screen (a headless MaTop over the live source, ticking), in `ma-top --once --json` (one
snapshot: the trail in the heartbeat is its history) and in the exporter's `ma_finding`; all three clear once
the allocating stops. Windows of seconds instead of minutes (MA_TOP_RSS_*, a fast heartbeat and trail) so the
incident is staged in a test's time."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import psutil
import pytest
from bullmq import Queue
from redis.asyncio import Redis
from textual.widgets import Static

from pool.monitor.collector import Collector
from pool.monitor.findings import Thresholds
from pool.monitor.snapshot import WorkerBeat
from tests.support.exporter import Exporter, value
from tests.support.paths import BIN
from tests.support.waits import run_job, settle, wait_for
from tui.app import MaTop

Q = "identity-events"
NAME = f"{Q}:{Q}_00"
FAST = {"MA_HEARTBEAT_INTERVAL": "0.5", "MA_RSS_TRAIL_INTERVAL": "0.5", "MA_PROCESS_NAME": NAME}
SHORT = {"MA_TOP_RSS_GROWTH_WINDOW_S": "8", "MA_TOP_RSS_WARMUP_S": "2", "MA_TOP_RSS_GROWTH_PCT": "20"}
"""Growth windows of seconds instead of minutes, so the incident is staged in a test's time."""


def once(redis_url: str, cwd: Path) -> dict[str, Any]:
    """`ma-top --once --json` with the short windows, where no supervisord socket is."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MA_")} | SHORT
    out = subprocess.run(
        [str(BIN / "ma-top"), "--once", "--json", "--redis-url", redis_url],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    body: dict[str, Any] = json.loads(out.stdout)
    return body


async def beat_of(redis: Redis, pid: int, check: Any = bool) -> WorkerBeat:
    collector = Collector(redis, [Q])

    async def seen() -> WorkerBeat | None:
        beat = next((b for b in (await collector.fetch()).workers if b.pid == pid), None)
        return beat if beat is not None and check(beat) else None

    found: WorkerBeat = await wait_for(seen, what=f"a heartbeat of pid {pid}")
    return found


async def test_a_pool_processs_heartbeat_carries_its_rss_and_cpu_and_the_collector_reads_them(
    redis, valkey, start_pool, tmp_path
):
    pool = start_pool(Q, **FAST)
    await run_job(redis, Q, "test.sleep", {"seconds": 0})
    beat = await beat_of(redis, pool.proc.pid, lambda b: b.rss > 0)
    real = psutil.Process(pool.proc.pid).memory_info().rss
    assert beat.process == NAME and beat.host
    assert 0.5 * real < beat.rss < 1.5 * real, (beat.rss, real)
    assert beat.cpu is not None and beat.cpu >= 0
    # the CPU is measured since the previous beat: a busy slot shows it
    await run_job(redis, Q, "test.allocate", {"mib": 32, "steps": 40, "everySeconds": 0})
    await beat_of(redis, pool.proc.pid, lambda b: (b.cpu or 0) > 1)
    # 1.25 GiB held once the job is done: the RSS followed
    await beat_of(redis, pool.proc.pid, lambda b: not b.in_flight and b.rss > beat.rss + 1000 * 2**20)
    (worker,) = [w for w in once(valkey.url, tmp_path)["workers"] if w["pid"] == pool.proc.pid]
    assert worker["rss"] > 1000 * 2**20 and worker["cpu"] is not None
    trail = worker["rss_trail"]
    assert len(trail) > 1 and [at for at, _ in trail] == sorted(at for at, _ in trail)
    assert trail[0][1] < 500 * 2**20 < 1000 * 2**20 < trail[-1][1], "the trail holds the growth"


async def test_the_exporter_serves_each_processs_rss_and_cpu_from_its_heartbeat(redis, start_pool, exporter):
    pool = start_pool(Q, **FAST)
    beat = await beat_of(redis, pool.proc.pid, lambda b: b.rss > 0)
    exp: Exporter = exporter()

    def served() -> float | None:
        return value(exp.scrape(), "ma_process_rss_bytes", host=beat.host, process=NAME)

    rss = await wait_for(served, what="ma_process_rss_bytes")
    assert 0.5 * beat.rss < rss < 2 * beat.rss
    cpu = value(exp.scrape(), "ma_process_cpu_percent", host=beat.host, process=NAME)
    assert cpu is not None and cpu >= 0
    pool.stop()  # retires its heartbeat: its series leaves the exporter at once
    await wait_for(lambda: served() is None, what="the stopped process's RSS gone")


@pytest.mark.slow  # a staged incident on the full stack: CI runs it in its own step
async def test_a_handler_that_keeps_allocating_is_memory_growth_on_the_first_screen_and_in_the_exporter_until_it_stops(
    redis, valkey, start_pool, exporter, tmp_path
):
    pool = start_pool(Q, **FAST)
    beat = await beat_of(redis, pool.proc.pid, lambda b: b.rss > 0)
    subject = f"{beat.host}:{NAME}"
    exp: Exporter = exporter(**SHORT)

    def metric() -> float | None:
        return value(exp.scrape(), "ma_finding", kind="memory-growth", subject=subject, severity="warning")

    app = MaTop(redis, [], refresh_s=0.3, journal_path=tmp_path / "audit.log", thresholds=_short())
    async with app.run_test(size=(140, 40)):

        def on_screen() -> list[Any]:
            return [f for f in app.state.findings if f.kind == "memory-growth" and f.subject == subject]

        await wait_for(lambda: app.state.snapshot is not None and app.state.snapshot.workers, what="a tick")
        assert not on_screen() and metric() is None, "an idle slot does not grow"

        job = await Queue(Q, {"connection": redis}).add(
            "test.allocate", {"mib": 6, "steps": 60, "everySeconds": 0.4}
        )
        (found,) = await wait_for(on_screen, timeout=30, what="memory-growth on ma-top's first screen")
        assert found.goto == f"process:{Q}" and "RSS grew" in found.cause and "steps up" in found.evidence

        def pane() -> str:  # drawn on the render after the tick that found it
            return str(app.screen.query_one("#findings", Static).render())

        await wait_for(lambda: "RSS grew" in pane() and subject in pane(), what="the finding in the pane")
        await wait_for(lambda: metric() == 1, timeout=30, what="ma_finding memory-growth")
        (one,) = await wait_for(
            lambda: [f for f in once(valkey.url, tmp_path)["findings"] if f["kind"] == "memory-growth"],
            timeout=30,
            what="memory-growth in ma-top --once --json",
        )
        assert one["subject"] == subject and one["goto"] == f"process:{Q}"

        assert (await settle(redis, Q, str(job.id), timeout=60)).returnvalue["heldMib"] == 360
        await wait_for(lambda: not on_screen(), timeout=30, what="memory-growth cleared on ma-top")
        await wait_for(lambda: metric() is None, timeout=30, what="ma_finding memory-growth cleared")
        await wait_for(
            lambda: not [f for f in once(valkey.url, tmp_path)["findings"] if f["kind"] == "memory-growth"],
            timeout=30,
            what="memory-growth cleared in ma-top --once --json",
        )
    held = (await beat_of(redis, pool.proc.pid, lambda b: b.rss > 0)).rss
    assert held > beat.rss + 300 * 2**20, (
        "the memory is still held: the finding cleared because growth stopped"
    )


def _short() -> Thresholds:
    return Thresholds.from_env(SHORT)
