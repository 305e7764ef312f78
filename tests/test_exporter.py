"""The Prometheus exporter against real Valkey and a running pool: values equal the queues' own counts."""

from __future__ import annotations

import json
import os
import re
import signal
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import yaml
from bullmq import Queue

from devstack import engines
from pool.contracts import BULK_JOBS_KEY
from tests.support.exporter import value
from tests.support.paths import ROOT
from tests.support.processes import pool_env
from tests.support.supervisord import Supervisord
from tests.support.waits import run_job, wait_for

MONITORING = ROOT / "pool" / "monitoring"


async def test_scraped_values_equal_the_queue_counts_and_the_pool_counters(redis, start_pool, exporter):
    q = "identity-events"
    queue = Queue(q, {"connection": redis})
    pool = start_pool(q)
    await run_job(redis, q, "test.sleep", {"seconds": 0})
    await run_job(redis, q, "test.refuse", {"key": "org_x"})
    await run_job(redis, q, "test.flaky", {"key": "k", "succeedOnAttempt": 2}, attempts=3)
    await run_job(redis, q, "test.throttle", {"key": f"t{uuid.uuid4().hex}", "times": 1, "retryAfter": 1})
    pool.stop()  # its last flush writes the counters
    for _i in range(5):
        await queue.add("test.sleep", {"seconds": 0})
    await queue.add("test.sleep", {"seconds": 0}, {"delay": 600_000})
    foreign = Queue("product-x.jobs", {"connection": redis})  # a product queue nobody consumes
    await foreign.add("x.created", {})
    exp = exporter()

    async def settled() -> dict:
        m = exp.scrape()
        return m if value(m, "ma_queue_jobs", queue=q, state="waiting") == 5 else {}

    m = await wait_for(settled, what="a sample with the new jobs")
    counts = await queue.getJobCounts("waiting", "active", "delayed", "failed", "completed", "prioritized")
    for state, n in counts.items():
        assert value(m, "ma_queue_jobs", queue=q, state=state) == n, state
    assert value(m, "ma_queue_completed_total", queue=q) == 3
    assert value(m, "ma_queue_failed_total", queue=q) == 1
    assert value(m, "ma_queue_retries_total", queue=q) == 1
    assert value(m, "ma_queue_throttled_total", queue=q) == 1
    assert value(m, "ma_queue_oldest_waiting_seconds", queue=q) > 0
    assert value(m, "ma_queue_workers", queue=q) == 0  # the pool stopped and retired its heartbeat
    assert value(m, "ma_queue_jobs", queue="product-x.jobs", state="waiting") == 1
    assert (
        value(m, "ma_queue_handled", queue="product-x.jobs") == 0
        and value(m, "ma_queue_handled", queue=q) == 1
    )
    assert value(m, "ma_redis_up") == 1 and value(m, "ma_redis_eviction_policy_ok") == 1
    assert value(m, "ma_exporter_source_up", source="redis") == 1


async def test_stalls_move_their_counter(redis, start_pool, exporter, tasks_db):
    q = "identity-events"
    victim = start_pool(q)
    job = await Queue(q, {"connection": redis}).add("test.effect", {"key": "stall", "sleepSeconds": 10})
    await wait_for(
        lambda: tasks_db.fetchval("SELECT count(*) FROM test_attempts WHERE key = 'stall'"),
        what="job running",
    )
    os.kill(victim.proc.pid, signal.SIGKILL)
    start_pool(q)
    exp = exporter()
    await wait_for(
        lambda: value(exp.scrape(), "ma_queue_stalled_total", queue=q) == 1,
        timeout=40,
        what="stalled counter at 1",
    )

    async def stall_of_that_job() -> bool:
        return any(
            f.get("kind") == "stalled" and f.get("jobId") == job.id
            for _, f in await redis.xrange("ma:events")
        )

    await wait_for(stall_of_that_job, what="the counted stall is the killed job's (ma:events)")


async def test_label_sets_stay_bounded_however_many_distinct_jobs_run(redis, start_pool, exporter):
    q = "identity-events"
    queue = Queue(q, {"connection": redis})
    start_pool(q)
    exp = exporter()
    await run_job(redis, q, "test.sleep", {"seconds": 0})

    # every series the running pool has, its process's RSS and CPU from its heartbeat included
    def with_the_process() -> set[Any] | None:
        series = set(exp.scrape())
        return series if any(name == "ma_process_rss_bytes" for name, _ in series) else None

    before = await wait_for(with_the_process, what="the pool process's series")
    for start in range(0, 2000, 500):
        await queue.addBulk(
            [
                {"name": "test.sleep", "data": {"seconds": 0}, "opts": {"jobId": f"distinct-{i}"}}
                for i in range(start, start + 500)
            ]
        )
    await wait_for(
        lambda: value(exp.scrape(), "ma_queue_completed_total", queue=q) >= 2001,
        timeout=60,
        what="2000 jobs done",
    )
    after = set(exp.scrape())
    assert {name for name, _ in after} == {name for name, _ in before}
    assert len(after) == len(before), "no label per job"
    assert not any("distinct-" in v for _, labels in after for _, v in labels)


async def test_redis_down_the_exporter_still_answers_with_redis_up_0(tmp_path, exporter):
    own = engines.valkey(tmp_path / "v").start()
    exp = exporter(own.url, MA_SUPERVISOR_URLS=f"unix://{tmp_path}/nope.sock")
    assert value(exp.scrape(), "ma_redis_up") == 1
    own.stop()
    await wait_for(lambda: value(exp.scrape(), "ma_redis_up") == 0, what="redis_up 0")
    m = exp.scrape()
    assert value(m, "ma_exporter_source_up", source="redis") == 0
    assert value(m, "ma_exporter_source_up", source="supervisord nope.sock") == 0
    assert httpx.get(exp.url + "/healthz", timeout=5).status_code == 200


async def test_assignment_latency_is_a_histogram_and_telemetry_json(redis, start_real_pool, exporter):
    start_real_pool("task-notifications")
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    for _ in range(3):
        job = await run_job(
            redis,
            "task-notifications",
            "task.assigned",
            {
                "taskId": f"task_{uuid.uuid4().hex[:8]}",
                "organizationId": "org_acme",
                "tenantId": "org_acme_t1",
                "assigneeId": "user_acme_2",
                "assignedBy": "user_acme_1",
                "assignedAt": now,
            },
        )
        assert job.returnvalue["notified"] is True
    exp = exporter()
    m = exp.scrape()
    assert value(m, "ma_task_assignment_latency_seconds_count") == 3
    assert value(m, "ma_task_assignment_latency_seconds_bucket", le="+Inf") == 3
    assert value(m, "ma_task_assignment_latency_seconds_bucket", le="900.0") == 3
    body = httpx.get(exp.url + "/api/telemetry/metrics", timeout=5).json()
    assert body["count"] == 3 and len(body["samples"]) == 3
    assert body["percentiles"]["p50"] is not None and body["percentiles"]["p99"] >= body["percentiles"]["p50"]


async def test_supervisord_process_states_are_exported(valkey, exporter, tmp_path, db_urls):
    from pool.supervise import supervisord_env

    sup = Supervisord(
        tmp_path, supervisord_env(pool_env(valkey.url, db_urls, MA_EXPORTER_PORT=str(engines.free_port())))
    )
    try:
        await wait_for(sup.all_running, timeout=30, what="supervisord up")
        exp = exporter(MA_SUPERVISOR_URLS=f"unix://{tmp_path}/var/supervisor.sock")
        m = exp.scrape()
        assert value(m, "ma_supervisor_processes", program="billing-usage", state="RUNNING") == 2
        assert value(m, "ma_supervisor_processes", program="identity-events", state="FATAL") == 0
        assert value(m, "ma_exporter_source_up", source=f"supervisord {tmp_path.name}") == 1
    finally:
        sup.stop()


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(ma_[a-z_]+)\b", expr))


def _exported_names() -> set[str]:
    base = {
        "ma_queue_jobs",
        "ma_queue_completed_total",
        "ma_queue_failed_total",
        "ma_queue_retries_total",
        "ma_queue_throttled_total",
        "ma_queue_stalled_total",
        "ma_queue_oldest_waiting_seconds",
        "ma_queue_workers",
        "ma_queue_paused",
        "ma_queue_rate_limited",
        "ma_queue_handled",
        "ma_redis_up",
        "ma_redis_memory_used_bytes",
        "ma_redis_memory_max_bytes",
        "ma_redis_connected_clients",
        "ma_redis_eviction_policy_ok",
        "ma_redis_evicted_keys_total",
        "ma_redis_connection_failures_total",
        "ma_supervisor_processes",
        "ma_task_assignment_latency_seconds_bucket",
        "ma_exporter_source_up",
        "ma_finding",
    }
    source = (ROOT / "pool" / "exporter.py").read_text()
    for name in base:
        stem = re.sub(r"_(total|bucket)$", "", name)
        assert f'"{stem}' in source or 'f"ma_queue_{name}"' in source, name
    return base


def test_alert_rules_parse_and_use_only_exported_metrics():
    rules = yaml.safe_load((MONITORING / "alert-rules.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    names = {a["alert"] for a in alerts}
    assert {
        "MaBillingUsageBacklog",
        "MaPaymentSyncRetriesHigh",
        "MaRedisConnectionFailures",
        "MaQueueWithoutWorkers",
    } <= names
    exported = _exported_names()
    for alert in alerts:
        assert set(alert) >= {"alert", "expr", "for", "labels", "annotations"}, alert["alert"]
        assert re.fullmatch(r"\d+[smh]", alert["for"])
        assert alert["expr"].count("(") == alert["expr"].count(")")
        assert _metric_names(alert["expr"]) <= exported, (
            alert["alert"],
            _metric_names(alert["expr"]) - exported,
        )


def test_grafana_dashboard_parses_and_queries_only_exported_metrics():
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    for expr in exprs:
        assert _metric_names(expr) <= _exported_names(), expr
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for topic in ("depth", "throughput", "fail", "retries", "throttled", "latency", "supervisord"):
        assert topic in titles, topic


async def test_bulk_jobs_from_their_last_state_records_are_exported_and_bounded(redis, exporter):
    """The contract with the bulk-job publisher: its last message per bulk job in the hash `ma:bulk-jobs`."""
    now_ms = int(time.time() * 1000)

    def message(i: int, status: str, updated_ms: int) -> str:
        return json.dumps(
            {
                "bulkJobId": f"bulk-{i}",
                "jobId": str(i),
                "operation": "bulk.suspend",
                "status": status,
                "total": 100,
                "processed": 40 + i,
                "succeeded": 38 + i,
                "failed": 2,
                "throughputPerSec": 12.5,
                "startedAt": now_ms - 60_000,
                "updatedAt": updated_ms,
                "host": "h1",
                "pid": 4242,
            }
        )

    await redis.hset(
        BULK_JOBS_KEY,
        mapping={
            "bulk-1": message(1, "running", now_ms - 3_000),
            "bulk-2": message(2, "completed", now_ms - 10_000),
            "bulk-old": message(9, "completed", now_ms - 3 * 86_400_000),  # too old to show
            "bulk-bad": "{not json",
        },
    )
    m = exporter().scrape()
    assert value(m, "ma_bulk_job_processed", bulk_job_id="bulk-1", operation="bulk.suspend") == 41
    assert value(m, "ma_bulk_job_running", bulk_job_id="bulk-1", operation="bulk.suspend") == 1
    assert value(m, "ma_bulk_job_running", bulk_job_id="bulk-2", operation="bulk.suspend") == 0
    assert (
        2 <= value(m, "ma_bulk_job_last_heard_seconds", bulk_job_id="bulk-1", operation="bulk.suspend") < 30
    )
    assert value(m, "ma_bulk_job_total", bulk_job_id="bulk-9", operation="bulk.suspend") is None
