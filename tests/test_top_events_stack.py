"""The events view on the real stack: a fresh ma-top reads the last 15 minutes by stream id, and a bulk job with
thousands of failing items neither floods the stream nor hides the Redis outage that came before it."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest
from redis.asyncio import Redis
from textual.widgets import DataTable

from devstack import engines
from pool.contracts import EVENTS_STREAM, WORKERS_INDEX
from pool.monitor.events import RECENT_S, coalesce, events_after
from tests.support.waits import run_job, wait_for
from tui import format_events
from tui.app import MaTop

BULK = "super-admin.bulk-job"
FAILING = 2_000


def rows(app: MaTop) -> list[list[str]]:
    table = app.screen.query_one(DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def redis_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_a_fresh_ma_top_reads_the_last_15_minutes_by_stream_id_not_the_newest_500(redis, tmp_path):
    now = await redis_ms(redis)

    def record(kind: str, message: str, ts: int) -> dict[str, str]:
        return {
            "ts": str(ts),
            "kind": kind,
            "queue": "billing-usage",
            "message": message,
            "host": "h",
            "pid": "1",
        }

    too_old = now - (RECENT_S + 300) * 1000
    outage = now - 10 * 60_000
    await redis.xadd(EVENTS_STREAM, record("stalled", "job 1 stalled", too_old), id=f"{too_old}-0")
    await redis.xadd(
        EVENTS_STREAM, record("redis-connection-error", "Redis connection failed", outage), id=f"{outage}-0"
    )
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(3_000):
            pipe.xadd(EVENTS_STREAM, record("failed", "boom", now - 60_000 + i), id=f"{now - 60_000 + i}-0")
        await pipe.execute()

    entries = await events_after(redis, "-")
    assert [f["kind"] for _, f in entries[:2]] == ["redis-connection-error", "failed"]
    assert len(entries) == 3_001  # the outage, 2,500 records older than the newest 500, and those 500

    first = await events_after(redis, "-", batch=100)  # bounded: ten batches per read, the next read goes on
    assert len(first) == 1_000
    rest = await events_after(redis, first[-1][0])
    assert first + rest == entries

    app = MaTop(redis, [], refresh_s=0.2, journal_path=tmp_path / "audit.log")
    async with asyncio.timeout(90), app.run_test(size=(160, 36)) as pilot:
        await pilot.press("2")
        await wait_for(
            lambda: any(r[1] == "redis-connection-error" for r in rows(app)), what="the outage row"
        )
        assert all(r[1] != "stalled" for r in rows(app))  # 20 minutes old: not read on open
        assert sum(r.events for r in app.state.event_rows() if r.kind == "failed") == 3_000


@pytest.mark.slow  # a staged incident on the full stack: CI runs it in its own step
async def test_a_bulk_job_with_2000_failing_items_leaves_the_earlier_outage_on_screen_with_true_counts(
    start_pool, start_real_pool, tmp_path
):
    own = engines.valkey(tmp_path / "valkey").start()
    client = Redis.from_url(own.url, decode_responses=True)
    try:
        # Given two slots that live through a Redis outage (each reports it once Redis is back) ...
        slots = [start_pool("identity-events", REDIS_URL=own.url) for _ in range(2)]
        await wait_for(lambda: beats(client, 2), timeout=30, what="both heartbeats")
        own.stop()
        for slot in slots:
            await wait_for(
                lambda s=slot: "Redis connection failed" in s.text(), timeout=30, what="the outage seen"
            )
        own.start()
        await client.aclose()
        client = Redis.from_url(own.url, decode_responses=True)
        await wait_for(lambda: kinds(client, "redis-recovered", 2), timeout=30, what="both recovery events")

        # ... when a bulk job fails 2,000 items,
        bulk_pool = start_real_pool(BULK, REDIS_URL=own.url)
        bulk = "bulk_flood"
        ids = [f"u_missing_{i:04d}" for i in range(FAILING)]
        body = {"bulkJobId": bulk, "actorId": "user_root", "target": "users", "reason": "cleanup", "ids": ids}
        job = await run_job(client, BULK, "bulk.suspend", body, timeout=240)
        assert job.failedReason.startswith(f"every item of bulk job {bulk} failed ({FAILING})")

        # then the runbook's line is logged per item, and the stream has a few aggregated events, ≤ 1 a second,
        lines = [
            line for line in bulk_pool.text().splitlines() if "Super admin bulk job operation failed" in line
        ]
        items = [line for line in lines if " scope=job " not in line]
        assert len(items) == FAILING, (len(items), job.attemptsMade, bulk_pool.text()[-1500:])
        assert len(lines) - len(items) == 1, "and once for the job as a whole, which failed"
        # the job's own `failed` event follows its bulk events in the slot's buffer: once it is in, they all are
        await wait_for(lambda: kinds(client, "failed", 1), timeout=30, what="the job's failed event")
        failures = await bulk_events(client)
        assert sum(int(f["count"]) for f in failures) == FAILING, [(f["ts"], f["count"]) for f in failures]
        stamps = [int(f["ts"]) for f in failures]
        assert all(b - a >= 900 for a, b in itertools.pairwise(stamps)), stamps
        assert 1 <= len(failures) <= (stamps[-1] - stamps[0]) / 1000 + 1
        assert [int(f["failedTotal"]) for f in failures][-1] == FAILING
        sample = json.loads(failures[0]["sample"])
        assert sample[0] == {"id": sample[0]["id"], "reason": f"user {sample[0]['id']} not found at identity"}

        # and a freshly opened ma-top shows the outage before them, in time order, with both pids.
        app = MaTop(client, [], refresh_s=0.2, journal_path=tmp_path / "audit.log")
        async with asyncio.timeout(90), app.run_test(size=(160, 40)) as pilot:
            await pilot.press("2")
            await wait_for(lambda: any(r[1] == "bulk-item-failed" for r in rows(app)), what="the bulk rows")
            event_rows = app.state.event_rows()
            shown = rows(app)
        assert len(shown) == len(event_rows), (shown, event_rows)  # the view shows every row, newest first
        for line, row in zip(shown, reversed(event_rows), strict=True):
            assert line[1] == row.kind and all(f"{pid}" in line[5] for _, pid in row.procs), (line, row)
        outage = [r for r in event_rows if r.kind == "redis-connection-error"]
        assert sum(r.events for r in outage) == 2, outage
        assert {pid for r in outage for _, pid in r.procs} == {str(s.proc.pid) for s in slots}
        bulk_rows = [r for r in event_rows if r.kind == "bulk-item-failed"]
        assert sum(r.events for r in bulk_rows) == len(failures)
        shown_totals = [line[4] for line in shown if line[1] == "bulk-item-failed"]
        assert sum(int(t.removesuffix(" failed items").replace(",", "")) for t in shown_totals) == FAILING
        kinds_on_screen = [line[1] for line in shown]  # newest first, by the events' own time
        assert kinds_on_screen.index("bulk-item-failed") < kinds_on_screen.index("redis-recovered")
        assert kinds_on_screen.index("redis-recovered") < kinds_on_screen.index("redis-connection-error")
    finally:
        await client.aclose()
        own.stop()


async def test_a_throttle_window_is_one_row_of_two_events_with_every_throttle_over_its_real_span(
    redis, start_pool
):
    pool = start_pool("identity-events")
    job = await run_job(
        redis, "identity-events", "test.throttle", {"key": "w1", "times": 8, "retryAfter": 0.2}
    )
    assert job.returnvalue == {"calls": 9, "attempt": 1}
    pool.stop()  # retiring closes the open window: its repeats are written with their span
    records = await wait_for(lambda: throttles(redis, 2), what="the window's two events")
    first, repeats = records
    assert (first["count"], repeats["count"]) == ("1", "7")
    assert int(first["ts"]) <= int(repeats["since"]) <= int(repeats["until"]) <= int(repeats["ts"])
    row = coalesce(records)[0]
    assert (row.events, row.total) == (2, 8)
    assert (row.first_ms, row.last_ms) == (int(first["ts"]), int(repeats["until"]))
    assert format_events.total(row) == "8 throttles"


async def throttles(client: Redis, n: int) -> list[dict[str, str]] | None:
    found = [f for _, f in await client.xrange(EVENTS_STREAM) if f.get("kind") == "throttled"]
    return found if len(found) >= n else None


async def beats(client: Redis, n: int) -> bool:
    return await client.zcard(WORKERS_INDEX) >= n


async def kinds(client: Redis, kind: str, n: int) -> bool:
    return sum(f.get("kind") == kind for _, f in await client.xrange(EVENTS_STREAM)) >= n


async def bulk_events(client: Redis) -> list[dict[str, str]]:
    return [f for _, f in await client.xrange(EVENTS_STREAM) if f.get("kind") == "bulk-item-failed"]
