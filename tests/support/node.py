"""Node BullMQ 6 (tests/node) as a producer, the way the platform's Node services add jobs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.support.paths import NODE_DIR


def install_node_bullmq() -> Path:
    """npm `bullmq` 6 + ioredis (+ bullmq-otel and OpenTelemetry for the traced producer), installed once (CI
    installs them in .ci/run; this makes a bare run work too)."""
    if not all((NODE_DIR / "node_modules" / m).exists() for m in ("bullmq", "bullmq-otel")):
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, capture_output=True
        )
    return NODE_DIR


def node_add(node_dir: Path, url: str, queue: str, jobs: list[dict[str, Any]]) -> list[str]:
    """Add `jobs` ({"name", "data", "opts"?}) with Node BullMQ; return their ids in order."""
    out = subprocess.run(
        ["node", "produce.mjs", url, queue, json.dumps(jobs)],
        cwd=node_dir,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(out.stdout)


def node_add_traced(node_dir: Path, url: str, queue: str, name: str, data: dict[str, Any]) -> dict[str, Any]:
    """Add one job with Node BullMQ and its telemetry (bullmq-otel) inside a producer span; return the job id and
    the producer's trace id and span ids (`produce_traced.mjs`)."""
    out = subprocess.run(
        ["node", "produce_traced.mjs", url, queue, name, json.dumps(data)],
        cwd=node_dir,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result
