"""`ma-worker exporter`: Prometheus metrics for Grafana, plus the tasks telemetry JSON, one per host.

- GET /metrics                  queue depth per state, totals, retries, throttles, stalls, oldest-waiting age,
                                workers, paused; requests per downstream and outcome; Redis health; supervisord process states; assignment latency;
                                `ma_finding{kind,subject,severity}` 1 per current finding (pool/monitor/findings.py,
                                the rules ma-top shows); every host's pool processes' RSS and CPU (heartbeats).
- GET /api/telemetry/metrics    recent assignment-latency samples and percentiles (JSON).
- GET /healthz

A background sampler refreshes a snapshot every BULLMQ_METRICS_INTERVAL seconds; a scrape only renders the
latest snapshot, so it never waits on Redis. A failed source shows as a metric (ma_exporter_source_up 0).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pool.connection import plain_redis
from pool.contracts import SUPERVISOR_STATES
from pool.metric_families import plain_gauges, process_usage
from pool.monitor import duplicates
from pool.monitor.collector import SCAN_COUNT, Collector
from pool.monitor.findings import Finding, History, Thresholds, findings
from pool.monitor.snapshot import RedisHealth, Snapshot
from pool.monitor.supervisor_source import ProcessInfo, endpoint_label, read_processes
from pool.queue_table import QUEUES
from pool.settings import RedisUrl, fail

log = logging.getLogger("pool.exporter")


class ExporterSettings(BaseSettings):
    model_config = SettingsConfigDict(
        case_sensitive=True, extra="ignore", frozen=True, use_attribute_docstrings=True
    )

    REDIS_URL: RedisUrl
    """Redis connection string."""
    BULLMQ_METRICS_INTERVAL: float = Field(default=15.0, gt=0)
    """Seconds between samples."""
    MA_EXPORTER_HOST: str = "127.0.0.1"
    MA_EXPORTER_PORT: int = Field(default=9464, ge=0, le=65535)
    MA_SUPERVISOR_URLS: str = ""
    """Comma-separated supervisord endpoints (unix:///path/var/supervisor.sock or http://host:port)."""


@dataclass
class Sample:
    snapshot: Snapshot | None = None
    processes: list[ProcessInfo] = field(default_factory=list)
    supervisor_errors: dict[str, str] = field(default_factory=dict)
    latency: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    taken_at: float = 0.0
    duration: float = 0.0


class Exporter:
    def __init__(
        self,
        collector: Collector,
        supervisors: list[str],
        interval: float,
        thresholds: Thresholds | None = None,
    ) -> None:
        self.collector = collector
        self.supervisors = supervisors
        self.interval = interval
        self.thresholds = thresholds or Thresholds()
        self.history = History()
        """When Redis was last up, and each process's RSS trail: what the findings need from earlier samples."""
        self.sample = Sample()
        self.duplicates: list[Finding] = []
        """The duplicate check's findings, as of its last run (every `duplicates.EVERY_S`, as ma-top runs it)."""
        self.duplicates_at = float("-inf")
        self.duplicates_error = ""
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    async def refresh(self) -> None:
        started = time.monotonic()
        bound = max(1.0, min(self.interval, 10.0))
        try:
            snapshot = await asyncio.wait_for(self.collector.fetch(), bound)
        except TimeoutError:
            snapshot = Snapshot(time.time(), (), (), self._redis_down("timed out"), {"redis": "timed out"})
        latency: dict[str, int] = {}
        if "redis" not in snapshot.errors:
            try:
                latency = await asyncio.wait_for(self.collector.latency_histogram(), bound)
            except Exception as error:  # noqa: BLE001 - shown as a metric
                snapshot.errors["latency"] = str(error)  # type: ignore[index]
        processes, sup_errors = await read_processes(self.supervisors) if self.supervisors else ([], {})
        found = findings(snapshot, self.history, processes or None, self.thresholds)
        if "redis" not in snapshot.errors and snapshot.redis.up:
            await self._check_duplicates(snapshot)
            found = duplicates.with_duplicates(found, self.duplicates)
        self.sample = Sample(
            snapshot, processes, sup_errors, latency, found, time.time(), time.monotonic() - started
        )

    async def _check_duplicates(self, snapshot: Snapshot) -> None:
        """The slower duplicate check (ma_finding{kind="duplicates"}), on its own timer and under a timeout."""
        if time.monotonic() - self.duplicates_at < duplicates.EVERY_S:
            return
        self.duplicates_at = time.monotonic()
        try:
            groups = await asyncio.wait_for(
                duplicates.duplicate_groups(self.collector.redis, [q.name for q in snapshot.queues]),
                duplicates.TIMEOUT_S,
            )
        except Exception as error:  # noqa: BLE001 - shown as ma_exporter_source_up{source="duplicates"}
            self.duplicates_error = f"{type(error).__name__}: {error}"
            log.warning("duplicate check failed: %s", self.duplicates_error)
            return
        self.duplicates, self.duplicates_error = duplicates.duplicate_findings(groups), ""

    @staticmethod
    def _redis_down(reason: str) -> RedisHealth:
        return RedisHealth(up=False, error=reason)

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:
                log.exception("sampling failed")
            await asyncio.sleep(self.interval)

    # -- prometheus_client custom collector ---------------------------------------------------------
    def collect(self) -> Any:
        sample = self.sample
        snap = sample.snapshot
        up = GaugeMetricFamily(
            "ma_exporter_source_up", "1 if the source answered at the last sample", labels=["source"]
        )
        up.add_metric(["redis"], 0.0 if snap is None or "redis" in snap.errors else 1.0)
        up.add_metric(["duplicates"], 0.0 if self.duplicates_error else 1.0)
        for (
            endpoint
        ) in self.supervisors:  # by host label: an http endpoint's credentials never reach a metric
            label = endpoint_label(endpoint)
            up.add_metric([f"supervisord {label}"], 0.0 if label in sample.supervisor_errors else 1.0)
        yield up
        last = GaugeMetricFamily(
            "ma_exporter_last_sample_timestamp_seconds", "When the last sample was taken"
        )
        last.add_metric([], sample.taken_at)
        yield last
        took = GaugeMetricFamily("ma_exporter_sample_duration_seconds", "How long the last sample took")
        took.add_metric([], sample.duration)
        yield took
        if snap is None:
            return
        finding = GaugeMetricFamily(
            "ma_finding",
            "1 per current finding (what ma-top shows): kind, queue/process/host, severity",
            labels=["kind", "subject", "severity"],
        )
        for f in sample.findings:  # bounded: a few kinds per queue, plus Redis
            finding.add_metric([f.kind, f.subject, f.severity], 1.0)
        yield finding
        health = snap.redis
        yield from plain_gauges(
            [
                ("ma_redis_up", "1 if Redis answered the last sample", float(health.up)),
                ("ma_redis_memory_used_bytes", "Redis used_memory", health.used_memory),
                ("ma_redis_memory_max_bytes", "Redis maxmemory (0 = no limit)", health.maxmemory),
                ("ma_redis_connected_clients", "Redis connected_clients", health.clients),
                (
                    "ma_redis_eviction_policy_ok",
                    "1 if maxmemory-policy is noeviction (BullMQ needs it)",
                    float(health.policy == "noeviction") if health.up else 0.0,
                ),
            ]
        )
        evicted = CounterMetricFamily(
            "ma_redis_evicted_keys", "Keys Redis evicted (any is a BullMQ data loss)"
        )
        evicted.add_metric([], health.evicted_keys)
        yield evicted
        failures = CounterMetricFamily(
            "ma_redis_connection_failures", "Redis connection failures seen by the pool"
        )
        failures.add_metric([], health.connection_failures)
        yield failures

        jobs = GaugeMetricFamily("ma_queue_jobs", "Jobs per queue and state", labels=["queue", "state"])
        families = {
            name: CounterMetricFamily(f"ma_queue_{name}", doc, labels=["queue"])
            for name, doc in (
                ("completed", "Jobs completed (BullMQ metrics)"),
                ("failed", "Jobs failed (BullMQ metrics)"),
                ("retries", "Failed attempts that were retried"),
                ("throttled", "Jobs deferred because identity throttled (no attempt burned)"),
                ("stalled", "Jobs found stalled and moved back to wait"),
            )
        }
        gauges = {
            name: GaugeMetricFamily(f"ma_queue_{name}", doc, labels=["queue"])
            for name, doc in (
                ("oldest_waiting_seconds", "Age of the oldest waiting job (0 when none)"),
                ("workers", "Pool processes consuming the queue (heartbeats)"),
                ("paused", "1 if the queue is paused"),
                ("rate_limited", "1 if the queue is rate limited"),
                ("handled", "1 if the pool's queue table handles this queue"),
            )
        }
        for q in snap.queues:
            for state, n in q.counts.items():
                jobs.add_metric([q.name, state], n)
            families["completed"].add_metric([q.name], q.completed_total)
            families["failed"].add_metric([q.name], q.failed_total)
            for counter in ("retries", "throttled", "stalled"):
                families[counter].add_metric([q.name], q.counters.get(counter, 0))
            gauges["oldest_waiting_seconds"].add_metric([q.name], q.oldest_waiting_s or 0.0)
            gauges["workers"].add_metric([q.name], q.workers)
            gauges["paused"].add_metric([q.name], float(q.paused))
            gauges["rate_limited"].add_metric([q.name], float(q.rate_limited_ms > 0))
            gauges["handled"].add_metric([q.name], float(q.handled))
        yield jobs
        yield from families.values()
        yield from gauges.values()
        downstream = CounterMetricFamily(
            "ma_downstream_requests",
            "The pool's requests to a downstream by outcome (ok, 429, 4xx, 5xx, timeout, connection-error, error)",
            labels=["downstream", "outcome"],
        )
        for d in snap.downstreams:  # bounded: four downstreams, seven outcomes
            for outcome, n in sorted(d.totals.items()):
                downstream.add_metric([d.name, outcome], n)
        yield downstream

        bulk = {
            name: GaugeMetricFamily(f"ma_bulk_job_{name}", doc, labels=["bulk_job_id", "operation"])
            for name, doc in (
                ("total", "Items in the bulk job"),
                ("processed", "Items processed so far"),
                ("failed", "Items that failed"),
                ("throughput_per_second", "Items per second"),
                ("last_heard_seconds", "Seconds since the bulk job's publisher was last heard"),
                ("running", "1 while the bulk job is running or throttled"),
            )
        }
        for job in snap.bulk_jobs:  # bounded: the collector keeps at most 50, updated within a day
            labels = [job.bulk_job_id, job.operation]
            bulk["total"].add_metric(labels, job.total)
            bulk["processed"].add_metric(labels, job.processed)
            bulk["failed"].add_metric(labels, job.failed)
            bulk["throughput_per_second"].add_metric(labels, job.throughput_per_sec)
            bulk["last_heard_seconds"].add_metric(labels, max(0.0, snap.taken_at - job.updated_at))
            bulk["running"].add_metric(labels, float(job.status in ("running", "throttled")))
        yield from bulk.values()

        procs = GaugeMetricFamily(
            "ma_supervisor_processes",
            "supervisord processes per program and state",
            labels=["program", "state"],
        )
        counted: dict[tuple[str, str], int] = {}
        for p in sample.processes:
            counted[(p.group, p.state)] = counted.get((p.group, p.state), 0) + 1
        for program in sorted({p.group for p in sample.processes}):
            for state in SUPERVISOR_STATES:
                procs.add_metric([program, state], counted.get((program, state), 0))
        yield procs
        yield from process_usage(snap)

        hist = sample.latency
        if hist:
            buckets = sorted(
                ((k[3:], v) for k, v in hist.items() if k.startswith("le:") and k != "le:+Inf"),
                key=lambda kv: float(kv[0]),
            )
            family = HistogramMetricFamily(
                "ma_task_assignment_latency_seconds", "Task assigned -> notification created"
            )
            family.add_metric(
                [],
                [(str(float(b)), v) for b, v in buckets] + [("+Inf", hist.get("le:+Inf", 0))],
                sum_value=hist.get("sum_ms", 0) / 1000,
            )
            yield family

    # -- HTTP -----------------------------------------------------------------------------------------
    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def telemetry(self, request: web.Request) -> web.Response:
        try:
            samples = await asyncio.wait_for(self.collector.latency_samples(1000), 2.0)
        except Exception as error:  # noqa: BLE001
            return web.json_response({"error": f"redis: {type(error).__name__}"}, status=503)
        values = sorted(s["latencyMs"] for s in samples)

        def pct(p: float) -> float | None:
            if not values:
                return None
            return (
                float(statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1])
                if len(values) > 1
                else float(values[0])
            )

        return web.json_response(
            {
                "metric": "task_assignment_latency_ms",
                "count": len(values),
                "percentiles": {"p50": pct(50), "p90": pct(90), "p99": pct(99)},
                "samples": samples[:100],
            }
        )

    async def healthz(self, request: web.Request) -> web.Response:
        fresh = time.time() - self.sample.taken_at < 3 * self.interval + 10
        return web.json_response(
            {"status": "ok" if fresh else "stale", "lastSample": self.sample.taken_at},
            status=200 if fresh else 503,
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/api/telemetry/metrics", self.telemetry)
        app.router.add_get("/healthz", self.healthz)
        return app


async def serve(settings: ExporterSettings) -> int:
    redis = plain_redis(str(settings.REDIS_URL), timeout=5)
    supervisors = [u.strip() for u in settings.MA_SUPERVISOR_URLS.split(",") if u.strip()]
    try:
        thresholds = Thresholds.from_env()  # the MA_TOP_* thresholds: the exporter decides as ma-top does
    except ValueError as error:
        fail(str(error))
    # one discovery page per sample: as many keys per second of interval as ma-top's 1 s ticks look at
    scan = SCAN_COUNT * max(1, round(settings.BULLMQ_METRICS_INTERVAL))
    collector = Collector(redis, QUEUES, scan_count=scan, recent_window_s=thresholds.rate_window_s)
    exporter = Exporter(collector, supervisors, settings.BULLMQ_METRICS_INTERVAL, thresholds)
    await exporter.refresh()
    sampler = asyncio.ensure_future(exporter.run())
    runner = web.AppRunner(exporter.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.MA_EXPORTER_HOST, settings.MA_EXPORTER_PORT).start()
    log.info(
        "exporter on http://%s:%d/metrics (every %.0fs; supervisord: %s)",
        settings.MA_EXPORTER_HOST,
        settings.MA_EXPORTER_PORT,
        settings.BULLMQ_METRICS_INTERVAL,
        ", ".join(supervisors) or "-",
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    sampler.cancel()
    await runner.cleanup()
    await redis.aclose()
    return 0
