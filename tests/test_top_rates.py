"""Rates an on-call engineer can trust (pool/monitor/rates.py): BullMQ's per-minute counts placed on the minute
they belong to (its `prevTS`), and the drain ETA from arrivals against departures.

The first tests read metrics records as BullMQ leaves them (HMGET count, prevCount, prevTS and the `:data`
list, as strings); the last ones drive BullMQ's own Lua and a pool process on a real Valkey.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import bullmq
from bullmq import Queue
from hypothesis import given, settings
from hypothesis import strategies as st

from pool.contracts import bull_key
from pool.monitor.collector import Collector
from pool.monitor.rates import Rates, Sample, drain_eta_s, minute_series, net_rate
from tests.support.waits import run_job, wait_for

MINUTE = 60_000
NOW = 29_916_667 * MINUTE + 20_000  # 20 s into a minute, epoch ms
T = 1_795_000_000.0  # epoch seconds


def series(record: dict[str, str | None], data: list[str], now_ms: float = NOW) -> tuple[int, ...]:
    """What the collector computes from one metrics hash and its data list."""
    prev_ts = record.get("prevTS")
    return minute_series(
        int(record.get("count") or 0),
        int(record.get("prevCount") or 0),
        int(prev_ts) if prev_ts else None,
        [int(p) for p in data],
        now_ms,
        60,
    )


def bullmq_collect(record: dict[str, int], data: list[int], timestamp: int, max_points: int = 10_080) -> None:
    """BullMQ's collectMetrics (moveToFinished-14.lua), line for line, for the property test below; the Valkey
    test at the end runs the Lua itself."""
    count = record.get("count", 0)
    record["count"] = count + 1  # local count = rcall("HINCRBY", metaKey, "count", 1) - 1
    if "prevTS" not in record:
        record["prevTS"], record["prevCount"] = timestamp, 0
        return
    n = min(timestamp // MINUTE - record["prevTS"] // MINUTE, max_points)
    if n > 0:
        delta = count - record["prevCount"]
        data[:0] = [0] * (n - 1) + [delta]  # LPUSH delta, then n-1 zeros: the zeros end up newest
        del data[max_points:]
        record["prevCount"], record["prevTS"] = count, timestamp


# -- the per-minute series ----------------------------------------------------------------------------------


def test_a_burst_eight_minutes_ago_shows_eight_minutes_back_and_zeros_since():
    # 10 jobs failed 8 minutes ago, nothing since: BullMQ has not rolled, `count - prevCount` is still 10
    record = {"count": "41", "prevCount": "31", "prevTS": str(NOW - 8 * MINUTE - 5_000)}
    shown = series(record, ["4", "0", "0", "7"])
    assert shown[:8] == (0,) * 8
    assert shown[8:13] == (10, 4, 0, 0, 7)  # the burst's minute, then the data list from the minute before it
    assert sum(shown) == 21 and len(shown) == 60


def test_the_current_minute_holds_only_the_jobs_finished_in_it():
    record = {"count": "57", "prevCount": "50", "prevTS": str(NOW - 3_000)}
    assert series(record, ["12", "9"])[:4] == (7, 12, 9, 0)


def test_a_rolled_gap_is_zeros_and_the_series_moves_on_with_now():
    # a job 3 minutes after the last one rolled: data = [0, 0, 6] (two idle minutes, then the old minute's 6)
    record = {"count": "8", "prevCount": "7", "prevTS": str(NOW - 1_000)}
    assert series(record, ["0", "0", "6"])[:5] == (1, 0, 0, 6, 0)
    assert series(record, ["0", "0", "6"], now_ms=NOW + 2 * MINUTE)[:7] == (0, 0, 1, 0, 0, 6, 0)


def test_points_older_than_the_window_drop_out_and_a_fast_writer_clock_counts_as_now():
    old = {"count": "5", "prevCount": "2", "prevTS": str(NOW - 59 * MINUTE)}
    assert series(old, ["9"]) == (0,) * 59 + (3,)  # the 9 was 60 minutes ago: out of the hour shown
    ahead = {"count": "3", "prevCount": "0", "prevTS": str(NOW + 50_000)}  # next minute on the worker's clock
    assert series(ahead, [])[:2] == (3, 0)


def test_no_metrics_or_no_prevts_is_all_zeros():
    assert series({"count": None, "prevCount": None, "prevTS": None}, []) == (0,) * 60
    assert series({"count": "4", "prevCount": "0"}, ["2"]) == (0,) * 60


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=90 * MINUTE), min_size=1, max_size=60))
def test_each_finished_job_is_counted_in_its_own_minute_of_the_last_hour(offsets):
    """Whatever the pattern of finishes, BullMQ's records read back as one job per its minute."""
    start = NOW - 90 * MINUTE
    record: dict[str, int] = {}
    data: list[int] = []
    times = sorted(start + o for o in offsets)
    for t in times:
        bullmq_collect(record, data, t)
    now = times[-1] + 7_000
    expected = [0] * 60
    for t in times:
        if now // MINUTE - t // MINUTE < 60:
            expected[now // MINUTE - t // MINUTE] += 1
    got = minute_series(record["count"], record["prevCount"], record["prevTS"], data[:59], now, 60)
    assert got == tuple(expected)


# -- arrivals, departures and the drain ETA -------------------------------------------------------------------


def samples(*points: tuple[float, int, int, int]) -> list[Sample]:
    """(seconds from T, backlog, completed, failed)."""
    return [Sample(T + at, b, c, f) for at, b, c, f in points]


def test_arrivals_are_departures_plus_the_backlog_change():
    # 5 minutes: 250 completed and 50 failed left (60/min), the backlog went 600 -> 500 (-20/min)
    rates = net_rate(samples((0, 600, 1000, 10), (150, 560, 1140, 30), (300, 500, 1250, 60)))
    assert rates == Rates(arrivals_per_min=40.0, departures_per_min=60.0, net_per_min=-20.0, span_s=300.0)
    assert drain_eta_s(500, rates) == 25 * 60


def test_a_busy_queue_whose_backlog_grows_does_not_drain():
    rates = net_rate(samples((0, 100, 0, 0), (300, 130, 3000, 0)))  # 600/min done, 606/min arriving
    assert rates is not None and rates.net_per_min > 0
    assert drain_eta_s(130, rates) is None
    standing = net_rate(samples((0, 80, 0, 0), (300, 80, 0, 0)))  # no workers: nothing moves
    assert standing is not None and drain_eta_s(80, standing) is None
    assert drain_eta_s(0, standing) == 0.0


def test_only_the_last_five_minutes_count_and_a_few_seconds_are_not_a_rate():
    rates = net_rate(samples((0, 1000, 0, 0), (100, 100, 900, 0), (250, 100, 900, 0), (400, 100, 900, 0)))
    assert rates is not None and rates.span_s == 300 and rates.net_per_min == 0  # the old drain is gone
    assert net_rate(samples((0, 100, 0, 0), (20, 90, 10, 0))) is None
    assert net_rate([]) is None


# -- on a real Valkey -------------------------------------------------------------------------------------------


def bullmq_collect_metrics_lua() -> str:
    """BullMQ's own collectMetrics, cut from the moveToFinished script it ships, callable at any timestamp."""
    text = (Path(bullmq.__file__).parent / "commands" / "moveToFinished-14.lua").read_text()
    start = text.index("local function batches(")
    end = text.index("\nend\n", text.index("local function collectMetrics(")) + len("\nend\n")
    call = "collectMetrics(KEYS[1], KEYS[1] .. ':data', ARGV[1], ARGV[2])"
    return f"local rcall = redis.call\n{text[start:end]}\n{call}\n"


async def server_ms(redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_bullmq_s_own_metrics_read_back_on_the_minutes_the_jobs_finished(redis):
    q = f"ma-test-metrics-{uuid.uuid4().hex[:8]}"  # its own queue: others' jobs in the session roll no figure here
    now = await server_ms(redis)
    # The last ten land 2 s into the minute 8 back, whatever second of its minute `now` is (now - 8 min - 2 s is
    # 9 minutes back in the first 2 s of a minute).
    eight_back = (now // MINUTE - 8) * MINUTE + 2_000
    finished = [now - 15 * MINUTE] * 7 + [now - 12 * MINUTE] * 4 + [eight_back] * 10
    script = redis.register_script(bullmq_collect_metrics_lua())
    for t in finished:
        await script(keys=[bull_key(q, "metrics", "failed")], args=[10_080, t])
    collector = Collector(redis, [q], clock=lambda: now / 1000)
    stats = (await collector.fetch()).queue(q)
    assert stats is not None
    expected = [0] * 60
    for t in finished:
        expected[now // MINUTE - t // MINUTE] += 1
    assert stats.failed_per_min == tuple(expected)
    assert stats.failed_per_min[:8] == (0,) * 8 and stats.failed_per_min[8] == 10  # not 10 "now"
    assert stats.minute_at == now // MINUTE * 60


async def test_a_failed_burst_counts_in_its_minute_and_is_zero_once_now_moves_on(redis, start_pool):
    """N failures, then nothing: the current minute shows N, and 2 minutes later 0 (N two minutes back)."""
    q = "identity-events"
    start_pool(q)
    await run_job(
        redis, q, "test.sleep", {"seconds": 0}
    )  # the pool is up: the failures come in quick succession
    await wait_for(lambda: _early_in_a_minute(redis), timeout=61, what="the first 30 s of a minute")
    n = 4
    for i in range(n):
        await run_job(redis, q, "test.refuse", {"key": f"org_{i}"})
    now = await server_ms(redis)
    finished = [j.finishedOn for j in await Queue(q, {"connection": redis}).getJobs(["failed"])]
    assert len(finished) == n and {t // MINUTE for t in finished} == {now // MINUTE}, (
        "failures crossed a minute"
    )
    clock = [now / 1000]
    collector = Collector(redis, [q], clock=lambda: clock[0])
    stats = (await collector.fetch()).queue(q)
    assert stats is not None and stats.failed_per_min[0] == n and sum(stats.failed_per_min) == n
    clock[0] += 120
    stats = (await collector.fetch()).queue(q)
    assert stats is not None and stats.failed_per_min[:3] == (0, 0, n) and sum(stats.failed_per_min) == n
    assert stats.failed_total == n  # the lifetime count is untouched; only the rate moved on


async def _early_in_a_minute(redis) -> bool:
    return await server_ms(redis) % MINUTE < 30_000
