"""Node BullMQ 6 (tests/node) as a producer, the way the platform's Node services add jobs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.support.paths import NODE_DIR


def install_node_bullmq() -> Path:
    """npm `bullmq` 6 + ioredis, installed once (CI installs them in .ci/run; this makes a bare run work too)."""
    if not (NODE_DIR / "node_modules" / "bullmq").exists():
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


def node_fail_many(
    node_dir: Path, url: str, queue: str, jobs: list[dict[str, Any]], work_dir: Path, timeout_s: float = 120
) -> list[str]:
    """Add `jobs` with Node BullMQ (addBulk, one attempt) and fail every one with a Node worker, the reason
    being each job's `data.error`; return their ids in order (tests/node/fail_many.mjs)."""
    jobs_file = work_dir / f"{queue}-jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    out = subprocess.run(
        ["node", "fail_many.mjs", url, queue, str(jobs_file), str(int(timeout_s * 1000))],
        cwd=node_dir,
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout_s + 10,
    )
    return json.loads(out.stdout)
