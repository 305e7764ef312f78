"""Metric families of the exporter (pool/exporter.py) that need nothing but their inputs."""

from __future__ import annotations

from typing import Any

from prometheus_client.core import GaugeMetricFamily

from pool.monitor.snapshot import Snapshot, WorkerBeat


def plain_gauges(items: list[tuple[str, str, float]]) -> Any:
    """One unlabelled gauge per (name, help, value)."""
    for name, doc, value in items:
        g = GaugeMetricFamily(name, doc)
        g.add_metric([], value)
        yield g


def process_usage(snap: Snapshot) -> Any:
    """Each live pool process's RSS and CPU from its heartbeat (every host's, not only this one's)."""
    rss = GaugeMetricFamily(
        "ma_process_rss_bytes",
        "Resident memory of a pool process (its heartbeat)",
        labels=["host", "process"],
    )
    cpu = GaugeMetricFamily(
        "ma_process_cpu_percent",
        "CPU of a pool process since its previous heartbeat, percent of one core",
        labels=["host", "process"],
    )
    latest: dict[tuple[str, str], WorkerBeat] = {}
    for beat in snap.workers:  # one per label set: a restarted slot's old beat may live until its TTL
        key = (beat.host, beat.process or str(beat.pid))
        if beat.rss and (key not in latest or beat.last_beat > latest[key].last_beat):
            latest[key] = beat
    for (host, process), beat in sorted(latest.items()):
        rss.add_metric([host, process], beat.rss)
        if beat.cpu is not None:
            cpu.add_metric([host, process], beat.cpu)
    yield rss
    yield cpu
