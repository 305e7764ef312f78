"""Node BullMQ 6 (tests/node) as a producer, the way the platform's Node services add jobs."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
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


def node_flow(
    node_dir: Path,
    url: str,
    flow: dict[str, Any] | None,
    *,
    work_queue: str,
    finish: int,
    fixed: bool = False,
    timeout_s: float = 60,
) -> Any:
    """Add `flow` (FlowProducer.add's tree; None: add none) with Node BullMQ and run a Node worker on
    `work_queue` until `finish` jobs finished (a job with `data.fail` fails for good, unless `fixed`); return
    the parent's and the direct children's {queue, id(, name)}, or None (tests/node/flow.mjs)."""
    args = [url, json.dumps(flow), work_queue, str(finish), str(int(timeout_s * 1000))]
    out = subprocess.run(
        ["node", "flow.mjs", *args, *(["fixed"] if fixed else [])],
        cwd=node_dir,
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout_s + 30,
    )
    return json.loads(out.stdout)


def node_upsert_scheduler(
    node_dir: Path,
    url: str,
    queue: str,
    scheduler_id: str,
    repeat: dict[str, Any],
    name: str,
    data: Any = None,
) -> dict[str, Any]:
    """Upsert a job scheduler with Node BullMQ (`queue.upsertJobScheduler`); return its first job's id and delay."""
    out = subprocess.run(
        ["node", "scheduler.mjs", url, queue, scheduler_id, json.dumps(repeat), name, json.dumps(data or {})],
        cwd=node_dir,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return dict(json.loads(out.stdout))


@contextlib.contextmanager
def node_worker(node_dir: Path, url: str, queue: str) -> Iterator[subprocess.Popen[bytes]]:
    """A Node BullMQ worker completing every job of `queue` (tests/node/consume.mjs) while the block runs, in its
    own process (an in-process worker would starve while a test blocks on a subprocess)."""
    proc = subprocess.Popen(
        ["node", "consume.mjs", url, queue, "1000000", "600000"],
        cwd=node_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


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
