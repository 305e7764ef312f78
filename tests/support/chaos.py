"""The chaos suite's background load and what it measures: a steady mixed load (every job name, tests/support/
mix.py) added by a Node BullMQ producer for the whole of a scenario, at MA_CHAOS_LOAD_RATE jobs/s (default: half
of the pool's capacity measured by bench/capacity.py on the reference machine); pickup p99 of the jobs picked up
before, during and after the fault (when the job's first attempt started minus when it was due, over the jobs
that ran once; the retried ones are counted apart); the backlog the fault built and the time it took to drain.

A scenario marks its fault with `bg.fault_started()` / `bg.fault_ended()`, then `await bg.stop()`: the load keeps
coming until the backlog the fault built has drained (the drain time, measured as production would see it: under
the continuing load) or DRAIN_LIMIT_S passed, and only then stops, before the scenario waits for its own jobs.
Stopping it there bounds every wait after it: on a machine whose cores are shared, the pool may drain less than
the rate, and a load still arriving would grow the backlog for as long as the test waited (the scenarios that ran
out of their 600 s did so). `await bg.figures()` goes into the recorded figures; `bg.lost` and `bg.failed` name
the background jobs that did not complete (the same invariants as the counted load: none lost, none failed).

MA_CHAOS_LOAD_RATE=0 turns the load off: every method is then a no-op and `figures()` is empty, so the scenarios
run as they do without it (CI's chaos step: .ci/run).
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
"""Jobs/s of the background load in every chaos scenario (>= 50 % of the capacity by default; 0: none)."""
DRAIN_LIMIT_S = 180.0
"""How long the load keeps coming after a fault, waiting for the backlog to drain, before it is stopped anyway:
a backlog of 10,800 jobs (three minutes of the load) drains in that time at the net 60 jobs/s the reference
machine has left (capacity 120 minus the load's 60); one that did not is reported as not drained, not timed."""
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

    def __init__(
        self, redis_url: str, admin_url: str, node: Path, home: Path, mix: Mix | None, rate: float
    ) -> None:
        self.redis_url, self.admin_url, self.node, self.home = redis_url, admin_url, node, home
        self.mix, self.rate = mix, rate
        self.on = rate > 0 and mix is not None
        self.proc: subprocess.Popen[str] | None = None
        self.sampler: asyncio.Task[None] | None = None
        self.stopped_at: float | None = None
        self.drained_at: float | None = None  # when the backlog was back to its level before the fault
        self.drain_limit_s: float | None = None
        self.samples: list[tuple[float, int]] = []  # (epoch s, backlog of every queue)
        self.fault: list[float] = []  # [start, end] epoch s
        self.ids: dict[str, dict[str, str]] = {}
        self.lost: list[tuple[str, str]] = []
        self.failed: list[tuple[str, str, str]] = []

    async def start(self) -> None:
        if self.mix is None or not self.on:
            return
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

    async def stop(self, limit_s: float = DRAIN_LIMIT_S) -> None:
        """After the fault: keep adding until the backlog has drained (`drained_at`) or `limit_s` passed, then stop
        adding (once; later calls return at once). The backlog is still sampled until `figures()`."""
        if self.proc is None or self.stopped_at is not None:
            return
        if len(self.fault) == 1:
            self.fault_ended()
        deadline = time.monotonic() + limit_s
        while True:
            if self._drained() is not None or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)  # the sampling interval; the loop is bounded by `deadline`
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.to_thread(self.proc.communicate, timeout=120)
        assert self.proc.returncode == 0, err[-2000:]
        self.ids = json.loads(out.strip().splitlines()[-1])
        self.stopped_at = time.time()
        self.drain_limit_s = limit_s

    def _base(self) -> int:
        """The backlog before the fault (median of its samples): what the load alone keeps queued."""
        before = sorted(n for t, n in self.samples if self.fault and t < self.fault[0]) or [0]
        return before[len(before) // 2]

    def _drained(self) -> float | None:
        """The first sample after the fault's end with the backlog within one second of arrivals of its level
        before the fault (remembered in `drained_at`); None while it is not."""
        if len(self.fault) < 2:
            return None
        base = self._base()
        self.drained_at = next(
            (t for t, n in self.samples if t >= self.fault[1] and n <= base + self.rate), None
        )
        return self.drained_at

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
                        "finished_at": int(finished) / 1000 if finished else None,
                        "failed": failed is not None,
                        "reason": reason or "",
                        "retried": int(attempts or 0) > 1,
                    }
                )
        return rows

    async def figures(self, redis: Redis) -> dict[str, Any]:
        """Pickup p99 per phase, the backlog's peak and drain time, and the background load's lost/failed jobs
        (none of them with the load off)."""
        if self.proc is None or self.sampler is None:
            return {}
        await self.stop()
        # What was left when the load stopped drains at the pool's pace: a deadline proportional to it (a quarter
        # of the reference capacity: a shared machine's pace, not the reference's), and a minute on top.
        left = self.samples[-1][1] if self.samples else 0
        rows = await self.settle(redis, timeout=60 + left / (CAPACITY_JOBS_PER_S / 4))
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
        first = self.samples[0][0] if self.samples else None
        done_before = (
            round(
                sum(1 for r in rows if r["finished_at"] and first <= r["finished_at"] < start)
                / (start - first),
                1,
            )
            if first is not None and start is not None and start > first
            else None
        )
        return {
            "bg_rate": self.rate,
            "bg_done_per_s_before": done_before,  # below the rate: this machine did not keep up even before
            "bg_jobs": len(rows),
            "bg_lost": len(self.lost),
            "bg_failed": len(self.failed),
            "bg_retried": sum(1 for r in rows if r["retried"]),
            **{f"pickup_p99_{phase}_s": p99(values) for phase, values in phases.items()},
            **self._drain(start, end if start is not None else None),
        }

    def _drain(self, start: float | None, end: float | None) -> dict[str, Any]:
        """The backlog before the fault (median), its peak, and the seconds from the fault's end until it was back
        within one second of arrivals of that level while the load still came (None: not within the limit, the
        load was stopped first and whatever drained after that is not a drain under load)."""
        if start is None or end is None:
            return {"backlog_before": None, "backlog_peak": None, "drain_s": None, "drain_limit_s": None}
        peak = max((n for t, n in self.samples if t >= start), default=0)
        back = (
            self.drained_at
            if self.drained_at is not None and self.drained_at <= (self.stopped_at or 0)
            else None
        )
        return {
            "backlog_before": self._base(),
            "backlog_peak": peak,
            "drain_s": None if back is None else round(max(0.0, back - end), 1),
            "drain_limit_s": self.drain_limit_s,
        }
