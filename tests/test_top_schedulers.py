"""The job schedulers on real Valkey: the queue table's (upserted as a pool slot does at start), one a Node
producer added, a last run that failed, and a run overdue with no worker: MISSED in `ma-top --once --json` until a
worker runs it."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bullmq import Queue, Worker

from pool.monitor.collector import Collector
from pool.queue_table import QUEUES
from pool.runtime import upsert_schedules
from tests.support.exporter import value
from tests.support.node import node_upsert_scheduler, node_worker
from tests.support.top import about, once
from tests.support.waits import wait_for

DAY_MS = 86_400_000


async def test_the_queue_tables_three_schedulers_are_listed_with_their_next_run(redis):
    for spec in QUEUES.values():
        await upsert_schedules(spec, redis)  # what every slot does at start
    before_ms = time.time() * 1000

    snap = await Collector(redis, list(QUEUES)).fetch()

    listed = {(s.queue, s.id): s for s in snap.schedulers}
    expected = {(q, sch.id): sch for q, spec in QUEUES.items() for sch in spec.schedules}
    assert set(listed) == set(expected) and len(listed) == 3
    for key, sch in expected.items():
        s = listed[key]
        assert (s.job_name, s.every_ms, s.interval_ms, s.pattern) == (
            sch.job_name,
            sch.every_ms,
            sch.every_ms,
            "",
        )
        # an `every` scheduler's first run is due at once: its job waits for a worker, not yet late
        assert abs(s.next_ms - before_ms) < 60_000 and s.next_run is not None
        assert s.next_run.job_id == f"repeat:{sch.id}:{s.next_ms}" and s.next_run.outcome == "waiting"
        assert s.last_run is None and not s.missed
    assert listed[("task-notifications", "task-due-soon")].schedule == "every 5m"


async def test_a_scheduler_a_node_producer_added_is_listed_with_its_cron_pattern_and_zone(
    redis, valkey, node_bullmq
):
    first = node_upsert_scheduler(
        node_bullmq,
        valkey.url,
        "product-x.reports",
        "daily-report",
        {"pattern": "0 9 * * *", "tz": "Europe/Paris"},
        "report.daily",
        {"kind": "usage"},
    )

    (s,) = (await Collector(redis, ["product-x.reports"]).fetch()).schedulers

    assert (s.queue, s.id, s.job_name, s.pattern, s.tz) == (
        "product-x.reports",
        "daily-report",
        "report.daily",
        "0 9 * * *",
        "Europe/Paris",
    )
    assert s.schedule == "cron 0 9 * * * Europe/Paris" and s.interval_ms == DAY_MS
    assert first["id"] == f"repeat:daily-report:{s.next_ms}" and s.next_run is not None
    assert s.next_run.outcome == "delayed" and s.next_ms > s.seen_at_ms and not s.missed
    at = datetime.fromtimestamp(s.next_ms / 1000, tz=ZoneInfo("Europe/Paris"))
    assert (at.hour, at.minute, at.second) == (9, 0, 0) and s.next_ms - s.seen_at_ms <= DAY_MS


async def test_a_run_that_failed_is_the_last_run_and_the_next_one_waits_delayed(redis, valkey):
    q = "product-x.sweeps"
    queue = Queue(q, {"connection": redis})
    await queue.upsertJobScheduler("sweep", {"every": 60_000}, "sweep.run", {})

    async def fail(job: Any, token: str) -> None:
        raise RuntimeError("sweep target unreachable")

    worker = Worker(q, fail, {"connection": valkey.url})
    collector = Collector(redis, [q], schedulers_every=0)
    try:

        async def last_failed() -> Any:
            (s,) = (await collector.fetch()).schedulers
            return s if s.last_run is not None and s.last_run.outcome == "failed" else None

        s = await wait_for(last_failed, what="the sweep's first run failed")
    finally:
        await worker.close()
    assert s.last_run.job_id == f"repeat:sweep:{s.next_ms - 60_000}" and s.last_run.at_ms > 0
    assert s.next_run is not None and s.next_run.outcome == "delayed" and s.iterations == 2
    assert s.next_run.job_id == f"repeat:sweep:{s.next_ms}" and not s.missed


async def test_an_overdue_run_with_no_worker_is_missed_in_once_json_until_a_worker_runs_it(
    redis, valkey, node_bullmq, tmp_path
):
    q = "product-x.pings"
    await Queue(q, {"connection": redis}).upsertJobScheduler("ping", {"every": 1_000}, "ping.send", {})

    def missed() -> list[dict[str, str]]:
        return about(once(valkey.url, tmp_path), "scheduler-missed", q)

    (found,) = await wait_for(missed, timeout=30, what="scheduler-missed in --once --json")
    assert found["severity"] == "warning" and found["goto"] == "schedulers"
    assert found["cause"].startswith("scheduler ping missed its run due ") and "(every 1s)" in found["cause"]
    assert "no worker runs the queue" in found["cause"]
    assert "next run repeat:ping:" in found["evidence"] and "last run none yet" in found["evidence"]
    assert "ma-top 7" in found["action"]
    text = once(valkey.url, tmp_path, as_json=False)
    assert f"WARNING  {q}: scheduler ping missed its run" in text

    with node_worker(node_bullmq, valkey.url, q):

        def cleared() -> Any:
            snap = once(valkey.url, tmp_path)
            (s,) = [s for s in snap["schedulers"] if s["queue"] == q]
            last = s["last_run"] or {}
            return not about(snap, "scheduler-missed", q) and last.get("outcome") == "completed" and s

        s = await wait_for(cleared, timeout=30, what="scheduler-missed gone, its last run completed")
    ran_ms = int(s["last_run"]["job_id"].removeprefix("repeat:ping:"))
    assert s["next_ms"] > ran_ms and s["next_run"]["job_id"] == f"repeat:ping:{s['next_ms']}"


async def test_a_paused_queues_scheduler_is_missed_in_once_and_the_exporter_until_it_is_resumed(
    redis, valkey, node_bullmq, exporter, tmp_path
):
    q = "product-x.digests"
    queue = Queue(q, {"connection": redis})
    await queue.pause()
    await queue.upsertJobScheduler("digest", {"every": 1_000}, "digest.send", {})

    exp = exporter()
    with node_worker(node_bullmq, valkey.url, q):  # a worker is there: the pause holds the run
        (found,) = await wait_for(
            lambda: about(once(valkey.url, tmp_path), "scheduler-missed", q), timeout=30, what="MISSED"
        )
        assert found["cause"].endswith("; the queue is paused")
        await wait_for(
            lambda: value(exp.scrape(), "ma_finding", kind="scheduler-missed", subject=q, severity="warning"),
            what="ma_finding scheduler-missed",
        )

        await queue.resume()

        await wait_for(lambda: not about(once(valkey.url, tmp_path), "scheduler-missed", q), what="cleared")
        await wait_for(
            lambda: (
                value(exp.scrape(), "ma_finding", kind="scheduler-missed", subject=q, severity="warning")
                is None
            ),
            what="ma_finding gone",
        )


async def test_a_malformed_scheduler_record_is_listed_as_it_is_never_missed_and_hides_no_other(redis):
    await upsert_schedules(QUEUES["task-notifications"], redis)
    await redis.zadd("bull:product-x.odd:repeat", {"odd": 123})  # next run in 1970
    await redis.hset(
        "bull:product-x.odd:repeat:odd", mapping={"name": "x.y", "every": "soon", "pattern": "?!"}
    )

    snap = await Collector(redis, ["task-notifications", "product-x.odd"]).fetch()

    odd, due_soon = snap.schedulers
    assert (odd.id, odd.job_name, odd.every_ms, odd.pattern, odd.interval_ms) == ("odd", "x.y", 0, "?!", 0)
    assert odd.late_ms > 0 and not odd.missed and odd.next_run is not None and odd.next_run.outcome == "gone"
    assert due_soon.id == "task-due-soon" and due_soon.interval_ms == 300_000
