"""The chaos suite's background load and what it measures: a steady mixed load (every job name, tests/support/
mix.py) added by a Node BullMQ producer for the whole of a scenario, at MA_CHAOS_LOAD_RATE jobs/s (default: half
of the pool's capacity measured by bench/capacity.py on the reference machine); pickup p99 of the jobs picked up
before, during and after the fault (when the job's first attempt started minus when it was due, over the jobs
that ran once; the retried ones are counted apart); the backlog the fault built and the time it took to drain.

A scenario marks its fault with `bg.fault_started()` / `bg.fault_ended()`, stops the load with `await bg.stop()`
and adds `await bg.figures()` to its recorded figures; `bg.lost` and `bg.failed` name the background jobs that
did not complete (the same invariants as the counted load: none lost, none failed, this load is all valid).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from tests.support.loadstack import backlog
from tests.support.mix import Mix

CAPACITY_JOBS_PER_S = 120.0
"""The pool's capacity for the mix on the reference machine (2 cores; bench/capacity.py, bench/REPORT.md)."""
LOAD_RATE = float(os.environ.get("MA_CHAOS_LOAD_RATE", CAPACITY_JOBS_PER_S / 2))
"""Jobs/s of the background load in every chaos scenario (>= 50 % of the capacity by default)."""
PLAN_SECONDS = 600
"""The plan is long enough for any scenario; the producer is stopped when the scenario's own load is done."""
BEFORE_S = 10
"""Seconds the background load runs before a scenario starts: the `before` phase of its figures."""
KEEP = {"removeOnComplete": {"age": 3600}, "removeOnFail": {"age": 3600}}
"""Background jobs keep their hashes for an hour: their pickup times are read after the scenario."""


def p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3)


class BackgroundLoad:
    """The steady mixed load under one scenario: its producer, its backlog samples, its fault window."""

    def __init__(self, redis_url: str, admin_url: str, node: Path, home: Path, mix: Mix, rate: float) -> None:
        self.redis_url, self.admin_url, self.node, self.home = redis_url, admin_url, node, home
        self.mix, self.rate = mix, rate
        self.samples: list[tuple[float, int]] = []  # (epoch s, backlog of every queue)
        self.fault: list[float] = []  # [start, end] epoch s
        self.ids: dict[str, dict[str, str]] = {}
        self.lost: list[tuple[str, str]] = []
        self.failed: list[tuple[str, str, str]] = []

    async def start(self) -> None:
        plan = self.home / f"bg-{self.mix.tag}-{self.mix.n}.json"
        jobs = self.mix.jobs(int(self.rate * PLAN_SECONDS))
        await self.mix.insert_rows(self.admin_url)
        plan.write_text(json.dumps(jobs))
        self.proc = subprocess.Popen(
            ["node", "load.mjs", self.redis_url, str(plan), str(self.rate)],
            cwd=self.node,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.sampler = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        redis = Redis.from_url(self.redis_url, decode_responses=True, socket_timeout=5)
        try:
            while True:
                with contextlib.suppress(Exception):  # Valkey stopped mid-scenario: no sample then
                    self.samples.append((time.time(), sum((await backlog(redis)).values())))
                await asyncio.sleep(0.5)  # the sampling interval
        finally:
            with contextlib.suppress(
                Exception
            ):  # cancelled mid-command on a busy machine: the close may time out
                await redis.aclose()

    def fault_started(self) -> None:
        self.fault = [time.time()]

    def fault_ended(self) -> None:
        self.fault.append(time.time())

    async def stop(self) -> None:
        """Stop adding; keep sampling the backlog until `figures()`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.to_thread(self.proc.communicate, timeout=120)
        assert self.proc.returncode == 0, err[-2000:]
        self.ids = json.loads(out.strip().splitlines()[-1])
        self.stopped_at = time.time()

    async def settle(self, redis: Redis, timeout: float = 300) -> list[dict[str, Any]]:
        """Wait until every background job finished (or the deadline); their hashes' times and states."""
        deadline = time.monotonic() + timeout
        while True:
            rows = await self._read(redis)
            if all(r["finished"] for r in rows if r["exists"]) or time.monotonic() > deadline:
                return rows
            await asyncio.sleep(1)  # the poll interval of a loop bounded by `deadline`

    async def _read(self, redis: Redis) -> list[dict[str, Any]]:
        keys = [(q, job_id) for q, ids in self.ids.items() for job_id in ids.values()]
        rows: list[dict[str, Any]] = []
        for at in range(0, len(keys), 500):
            async with redis.pipeline(transaction=False) as pipe:
                for q, job_id in keys[at : at + 500]:
                    pipe.hmget(
                        f"bull:{q}:{job_id}",
                        "timestamp",
                        "delay",
                        "processedOn",
                        "finishedOn",
                        "failedReason",
                        "atm",
                    )
                    pipe.zscore(f"bull:{q}:failed", job_id)
                answers = await pipe.execute()
            for (q, job_id), (fields, failed) in zip(
                keys[at : at + 500], zip(answers[::2], answers[1::2], strict=True), strict=True
            ):
                ts, delay, processed, finished, reason, attempts = fields
                rows.append(
                    {
                        "queue": q,
                        "id": job_id,
                        "exists": ts is not None,
                        "added": int(ts) / 1000 + int(delay or 0) / 1000 if ts else None,
                        "processed": int(processed) / 1000 if processed else None,
                        "finished": bool(finished),
                        "failed": failed is not None,
                        "reason": reason or "",
                        "retried": int(attempts or 0) > 1,
                    }
                )
        return rows

    async def figures(self, redis: Redis) -> dict[str, Any]:
        """Pickup p99 per phase, the backlog's peak and drain time, and the background load's lost/failed jobs."""
        rows = await self.settle(redis)
        self.sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.sampler
        self.lost = [(r["queue"], r["id"]) for r in rows if not r["exists"] or not r["finished"]]
        self.failed = [(r["queue"], r["id"], r["reason"]) for r in rows if r["exists"] and r["failed"]]
        start = self.fault[0] if self.fault else None
        end = self.fault[1] if len(self.fault) > 1 else self.stopped_at
        phases: dict[str, list[float]] = {"before": [], "during": [], "after": []}
        for r in rows:
            if r["added"] is None or r["processed"] is None or r["retried"]:
                continue  # a retried job's processedOn is its last attempt's: its wait was the backoff
            # By when the job was picked up: `before` is the steady state, `during` what the fault did to pickup,
            # `after` the jobs the backlog held (their wait is the drain).
            if start is None or r["processed"] < start:
                phase = "before"
            else:
                phase = "during" if r["processed"] <= end else "after"
            phases[phase].append(max(0.0, r["processed"] - r["added"]))
        return {
            "bg_rate": self.rate,
            "bg_jobs": len(rows),
            "bg_lost": len(self.lost),
            "bg_failed": len(self.failed),
            "bg_retried": sum(1 for r in rows if r["retried"]),
            **{f"pickup_p99_{phase}_s": p99(values) for phase, values in phases.items()},
            **self._drain(start, end if start is not None else None),
        }

    def _drain(self, start: float | None, end: float | None) -> dict[str, Any]:
        """The backlog before the fault (median), its peak, and the seconds from the fault's end until it was back
        within one second of arrivals of that level."""
        if start is None or end is None:
            return {"backlog_before": None, "backlog_peak": None, "drain_s": None}
        before = sorted(n for t, n in self.samples if t < start) or [0]
        base = before[len(before) // 2]
        peak = max((n for t, n in self.samples if t >= start), default=0)
        back = next((t for t, n in self.samples if t >= end and n <= base + self.rate), None)
        return {
            "backlog_before": base,
            "backlog_peak": peak,
            "drain_s": None if back is None else round(back - end, 1),
        }
