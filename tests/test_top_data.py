"""ma-top's data layer (no Textual): counts, metrics, oldest age, paging, grouping, and O(1) refreshes."""

from __future__ import annotations

import time

from bullmq import Queue

from pool.monitor import actions, queries
from pool.monitor.collector import Collector
from pool.monitor.events import coalesce
from tests.support.waits import run_job


async def commands_sent(redis) -> int:
    stats = await redis.info("commandstats")
    return sum(
        v["calls"]
        for k, v in stats.items()
        if k.startswith("cmdstat_") and k != "cmdstat_info" and k != "cmdstat_config"
    )


async def test_snapshot_counts_metrics_and_oldest_age_match_the_queue(redis, start_pool):
    q = "identity-events"
    queue = Queue(q, {"connection": redis})
    start_pool(q)
    await run_job(redis, q, "test.sleep", {"seconds": 0})
    await run_job(redis, q, "test.refuse", {"key": "x"})
    await queue.pause()
    for _ in range(3):
        await queue.add("test.sleep", {"seconds": 0})
    await queue.add("test.sleep", {"seconds": 0}, {"delay": 60_000})
    snap = await Collector(redis).fetch()
    stats = snap.queue(q)
    assert stats is not None and stats.paused
    assert stats.counts == {**stats.counts, "waiting": 3, "delayed": 1, "failed": 1, "completed": 1}
    assert stats.completed_total == 1 and stats.failed_total == 1
    assert stats.completed_per_min[0] >= 0 and len(stats.completed_per_min) <= 60
    assert stats.oldest_waiting_s is not None and stats.oldest_waiting_s < 30
    assert stats.workers == 1 and stats.handled
    await queue.resume()


async def test_a_refresh_sends_the_same_commands_for_a_small_and_a_large_queue(tmp_path):
    """On a Valkey of its own: the command counters are server-wide, so no other client may talk to it."""
    from redis.asyncio import Redis

    from devstack import engines

    own = engines.valkey(tmp_path / "v", persistent=False).start()
    redis = Redis.from_url(own.url, decode_responses=True)
    try:
        await _same_commands(redis)
    finally:
        await redis.aclose()
        own.stop()


async def _same_commands(redis) -> None:
    queue = Queue("billing-usage", {"connection": redis})
    await queue.add("usage.aggregate", {})
    collector = Collector(redis, ["billing-usage"])
    await collector.fetch()  # discovery and INFO happen on their slower timers: not on the next ticks
    before = await commands_sent(redis)
    await collector.fetch()
    small = await commands_sent(redis) - before
    for start in range(0, 5000, 1000):
        await queue.addBulk(
            [{"name": "usage.aggregate", "data": {"i": i}} for i in range(start, start + 1000)]
        )
    before = await commands_sent(redis)
    await collector.fetch()
    large = await commands_sent(redis) - before
    assert small == large, f"{small} commands for 1 job, {large} for 5001"
    stats = await redis.info("commandstats")
    assert "cmdstat_keys" not in stats


async def test_jobs_page_is_newest_first_and_pages(redis):
    queue = Queue("identity-events", {"connection": redis})
    for i in range(120):
        await queue.add(f"job.{i}", {"i": i})
    first, total = await queries.jobs_page(redis, "identity-events", "waiting", 0)
    last, _ = await queries.jobs_page(redis, "identity-events", "waiting", 2)
    assert total == 120 and len(first) == 50 and len(last) == 20
    assert first[0].name == "job.119" and last[-1].name == "job.0"


async def test_requeue_touches_exactly_the_given_ids(redis, start_pool):
    q = "identity-events"
    start_pool(q)
    shown = [(await run_job(redis, q, "test.refuse", {"key": f"o{i}"})).id for i in range(3)]
    later = (await run_job(redis, q, "test.refuse", {"key": "late"})).id  # failed after the key press
    done, skipped = await actions.requeue(redis, q, [*shown, "missing-id"])
    assert (done, skipped) == (3, 1)
    assert await Queue(q, {"connection": redis}).getJobState(later) == "failed"


def test_repeated_events_are_coalesced_per_window():
    now = int(time.time() * 1000)
    events = [
        {
            "ts": str(now + i * 1000),
            "kind": "throttled",
            "queue": "billing-usage",
            "message": "Billing usage aggregation throttled",
            "count": "1",
        }
        for i in range(143)
    ]
    events.append({"ts": str(now + 500), "kind": "failed", "queue": "billing-usage", "message": "boom"})
    groups = coalesce(events, window_s=60)
    throttles = [g for g in groups if g.kind == "throttled"]
    assert [g.events for g in throttles] == [61, 61, 21]  # windows of 60 s, both ends inclusive
    assert [g.total for g in throttles] == [61, 61, 21]  # one throttle each
    assert sum(1 for g in groups if g.kind == "failed") == 1


def test_secrets_in_job_data_are_redacted():
    data = {"email": "a@b.c", "apiKey": "k", "nested": {"stripeSecret": "s", "list": [{"token": "t"}]}}
    assert queries.redact(data) == {
        "email": "a@b.c",
        "apiKey": "***",
        "nested": {"stripeSecret": "***", "list": [{"token": "***"}]},
    }


async def test_failures_group_by_normalized_reason_and_top_frame(redis, start_pool):
    q = "identity-events"
    start_pool(q)
    for i in range(3):
        await run_job(redis, q, "test.refuse", {"key": f"org_{i}x{i}"})  # PermanentError: same signature
    for i in range(2):
        await run_job(redis, q, "test.flaky", {"key": f"k{i}", "succeedOnAttempt": 9}, attempts=1)
    groups = await queries.failure_groups(redis, [q])
    assert [(g.count, g.signature) for g in groups] == [
        (3, "organization <id> does not exist"),
        (2, "downstream unavailable (attempt <n>)"),
    ]
    assert groups[1].top_frame.endswith("handlers.py:flaky")
    assert groups[0].names == ("test.refuse",) and len(groups[0].ids) == 3
    assert groups[0].first_seen <= groups[0].last_seen


def test_an_active_job_far_longer_than_usual_is_overdue():
    now = 1_000_000_000.0
    assert queries.is_overdue(int(now - 60_000), now, typical_ms=2_000)  # 60 s vs a 2 s median
    assert not queries.is_overdue(int(now - 8_000), now, typical_ms=2_000)  # under the 30 s floor
    assert not queries.is_overdue(int(now - 60_000), now, typical_ms=20_000)  # 3x: still usual enough
    assert not queries.is_overdue(0, now, typical_ms=None)


async def test_typical_duration_is_the_median_of_recent_completions(redis, start_pool):
    q = "identity-events"
    start_pool(q)
    for seconds in (0.1, 0.3, 0.2):
        await run_job(redis, q, "test.sleep", {"seconds": seconds})
    typical = await queries.typical_duration_ms(redis, q)
    assert typical is not None and 150 <= typical <= 600


async def test_supervisor_endpoints_are_shown_by_host_never_with_their_credentials():
    from pool.monitor.supervisor_source import endpoint_label, read_processes

    assert endpoint_label("unix:///srv/host-a/var/supervisor.sock") == "host-a"
    assert endpoint_label("http://ops:s3cret@host-b.internal:9001") == "host-b.internal:9001"
    assert endpoint_label("https://ops:s3cret@host-c/") == "host-c"
    processes, errors = await read_processes(
        ["http://ops:s3cret@127.0.0.1:9"], timeout=3
    )  # nothing listens there
    assert processes == [] and list(errors) == ["127.0.0.1:9"]
    assert "s3cret" not in " ".join(errors.values())
    from pool.monitor.supervisor_source import scrub, supervisor_call

    quoted = "<ProtocolError for ops:s3cret@host-b:9001/RPC2: 401 Unauthorized>"
    assert (
        scrub(quoted, "http://ops:s3cret@host-b:9001")
        == "<ProtocolError for host-b:9001/RPC2: 401 Unauthorized>"
    )
    try:
        await supervisor_call("http://ops:s3cret@127.0.0.1:9", "startProcess", "x")
    except RuntimeError as error:  # an action on an unreachable host: said, without the credentials
        assert "s3cret" not in str(error) and "startProcess" in str(error)
    else:
        raise AssertionError("an action on an unreachable supervisord succeeded")
