"""ma-top's pure formatting (tui/format.py): no app, no Redis."""

from __future__ import annotations

from datetime import datetime

from pool.monitor.collector import RedisHealth, Snapshot
from tests.support.fake_source import queue_stats
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


def test_drain_eta_uses_the_recent_completion_rate_not_the_current_minute():
    q = queue_stats("billing-usage", waiting=600)
    busy = q.__class__(**{**q.__dict__, "completed_per_min": (99, 10, 10, 10, 10, 10)})
    assert drain_eta(busy) == "1h"  # 600 jobs at 10/min; the partial minute (99) is ignored


def test_drain_eta_is_infinite_when_nothing_completes_and_a_dash_without_a_backlog():
    stuck = queue_stats("billing-usage", waiting=5)
    assert drain_eta(stuck) == "∞"
    assert drain_eta(queue_stats("billing-usage", delayed=5)) == "-"
    prioritized = queue_stats("billing-usage", prioritized=120)
    moving = prioritized.__class__(**{**prioritized.__dict__, "completed_per_min": (0, 2, 2, 2, 2, 2)})
    assert drain_eta(moving) == "1h"


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
    assert lines[2].split() == ["billing-usage", "7", "0", "0", "2", "-", "2"]
    down = Snapshot(0.0, (), (), RedisHealth(False, error="ConnectionError"))
    assert plain(down).splitlines()[0] == "redis DOWN ConnectionError  workers 0"
