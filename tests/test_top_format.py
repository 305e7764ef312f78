"""ma-top's pure formatting (tui/format.py): no app, no Redis."""

from __future__ import annotations

from datetime import datetime

from pool.contracts import RECENT_BUCKET_S, recent_field
from pool.monitor.recent import RecentCounts
from pool.monitor.snapshot import QueueStats, RedisHealth, Snapshot
from tests.support.fake_source import T0, queue_stats
from tui.format import age, drain_eta, plain, spark, when


def test_spark_reads_oldest_to_newest_scaled_to_the_busiest_minute():
    assert spark((8, 4, 0)) == "▁▄█"  # newest first in, newest last out
    assert spark((0, 0, 0)) == "▁▁▁"  # an idle queue is flat, not an error
    assert spark(()) == ""


def test_spark_shows_only_the_newest_width_minutes():
    assert len(spark(tuple(range(60)))) == 12
    assert spark(tuple(range(60)), width=3) == "█▄▁"  # minutes 2, 1, 0 ago


def test_age_uses_the_largest_whole_unit():
    assert [age(s) for s in (None, 0, 59, 60, 90, 3599, 3600, 86400 * 3)] == [
        "-",
        "0s",
        "59s",
        "1m",
        "2m",
        "60m",
        "1h",
        "3d",
    ]


def eta_after(q: QueueStats, *ticks: tuple[float, int, int]) -> str:
    """drain_eta once a history saw (seconds, waiting, completed_total) snapshots of the queue."""
    buckets = {
        int(T0 + at) // RECENT_BUCKET_S: {
            recent_field(q.name, "backlog"): waiting,
            recent_field(q.name, "completed_total"): completed,
            recent_field(q.name, "failed_total"): 0,
        }
        for at, waiting, completed in ticks
    }
    now = T0 + max(at for at, _, _ in ticks)
    return drain_eta(q, RecentCounts(now, 300.0, buckets), 300.0)


def test_drain_eta_counts_arrivals_not_only_completions():
    q = queue_stats("billing-usage", waiting=600)
    # 5 minutes: 50/min completed while 30/min arrived: the backlog shrank 100, 20/min net
    assert eta_after(q, (0, 700, 0), (300, 600, 250)) == "30m"
    # as busy, but as many arrived as completed: it never drains (completions alone said 12m)
    assert eta_after(q, (0, 600, 0), (300, 600, 250)) == "∞"


def test_drain_eta_waits_for_a_history_and_is_a_dash_without_a_backlog():
    q = queue_stats("billing-usage", prioritized=120)
    assert eta_after(q, (0, 0, 0)) == "…"  # one snapshot: no rate yet
    assert eta_after(q, (0, 0, 0), (10, 0, 5)) == "…"  # ten seconds: a burst, not a trend
    assert eta_after(queue_stats("billing-usage", delayed=5), (0, 0, 0)) == "-"
    # no worker: nothing drains it, however short the samples
    assert eta_after(queue_stats("billing-usage", waiting=5, workers=0), (0, 5, 0)) == "∞"


def test_when_is_local_clock_time_and_zero_is_never():
    ms = 1_795_000_000_000
    assert when(ms) == datetime.fromtimestamp(ms / 1000).strftime("%H:%M:%S")
    assert when(0) == "-"


def test_plain_prints_one_line_per_queue_and_says_when_redis_is_down():
    snap = Snapshot(
        0.0, (queue_stats("billing-usage", waiting=7, failed=2, workers=2),), (), RedisHealth(True)
    )
    lines = plain(snap).splitlines()
    assert lines[0] == "redis up  workers 0"
    assert lines[2].split() == ["billing-usage", "7", "0", "0", "2", "-", "2", "…"]
    down = Snapshot(0.0, (), (), RedisHealth(False, error="ConnectionError"))
    assert plain(down).splitlines()[0] == "redis DOWN ConnectionError  workers 0"
