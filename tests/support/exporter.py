"""`ma-worker exporter` as a real child process, scraped the way Prometheus does."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from devstack import engines
from tests.support.paths import BIN
from tests.support.waits import poll

Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""(metric name, sorted labels) -> value."""


class Exporter:
    def __init__(self, redis_url: str, log: Path, **env: str) -> None:
        self.port = engines.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full = {
            "PATH": os.environ["PATH"],
            "REDIS_URL": redis_url,
            "MA_EXPORTER_PORT": str(self.port),
            "BULLMQ_METRICS_INTERVAL": "0.3",
            **env,
        }
        self.out = open(log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(BIN / "ma-worker"), "exporter"], env=full, stdout=self.out, stderr=subprocess.STDOUT
        )

        def listening() -> bool:
            assert self.proc.poll() is None, f"the exporter exited at start:\n{log.read_text()}"
            return engines.port_open(self.port)

        poll(listening, timeout=20, what=f"the exporter listening on {self.port}")

        # Its first sample is taken before it listens, within a 1 s bound at the tests' 0.3 s interval: on a
        # busy machine a cold first read can miss it and that sample says Redis is down. Wait for one that
        # reached Redis, so a test's first scrape is of a sample that did.
        def reached_redis() -> bool:
            assert self.proc.poll() is None, f"the exporter exited:\n{log.read_text()}"
            return value(self.scrape(), "ma_exporter_source_up", source="redis") == 1

        poll(reached_redis, timeout=20, what="the exporter's first sample that reached Redis")

    def scrape(self) -> Metrics:
        response = httpx.get(self.url + "/metrics", timeout=5)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples
        }

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        self.out.close()


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.get((name, tuple(sorted(labels.items()))))
