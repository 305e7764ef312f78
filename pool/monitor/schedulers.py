"""Every BullMQ job scheduler of every known queue: what it makes, when it runs next, and how its last run went.

BullMQ keeps a queue's schedulers in `bull:<queue>:repeat` (scheduler id scored by its next run, epoch ms) and one
hash per scheduler (`bull:<queue>:repeat:<id>`: name, pattern or every, tz, `ic` = iterations made). The job of a
run has the id `repeat:<id>:<run ms>`; it waits in `delayed` until due, and when a worker takes it, the scheduler
moves on to the next run at once. So the job at the next run's id is the one still to run, and the last run is the
newest job at one of the earlier run times (every: `next - k * every`; a cron pattern: its earlier fire times).

The collector reads the sorted sets on every tick (one ZRANGE per queue, in its pipeline) and the rest here, in a
few pipelined round trips, O(number of schedulers): never O(jobs). A cron pattern's fire times come from croniter,
the library (and version) bullmq itself computes them with, with a 6-field pattern's seconds first as Node's
cron-parser reads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo
from typing import Any, cast
from zoneinfo import ZoneInfo

from croniter import croniter
from redis.asyncio import Redis

from pool.contracts import (
    BULL_PREFIX,
    JOB_LOCK,
    SCHEDULERS_SUFFIX,
    STATE_KEYS,
    bull_key,
    scheduler_job_id,
)

LOOK_BACK = 12
"""How many earlier run times are looked at for the last run's job (a worker that caught up after an outage skips
runs; a last run further back than this reads as `gone`)."""
OUTCOMES = ("completed", "failed", "active", "waiting", "delayed", "gone")
"""A run's job: finished either way, running, waiting for a worker, delayed (not due, or backing off before a
retry), or gone from Redis (removed by retention, or never found)."""

NextRuns = Mapping[tuple[str, str], int]
"""(queue, scheduler id) -> its next run, epoch ms: the `repeat` sorted sets as the collector reads them."""


@dataclass(frozen=True)
class Run:
    job_id: str
    outcome: str
    """One of OUTCOMES."""
    at_ms: int
    """When it finished (completed, failed), started (active), or is due (waiting, delayed); 0 when gone."""


@dataclass(frozen=True)
class Scheduler:
    queue: str
    id: str
    job_name: str
    pattern: str
    """A cron pattern ("" for an `every` scheduler)."""
    every_ms: int
    """The period of an `every` scheduler (0 for a cron pattern)."""
    tz: str
    next_ms: int
    """Its next run (epoch ms): the score in `bull:<queue>:repeat`."""
    seen_at_ms: float
    """Redis' clock when `next_ms` was read."""
    interval_ms: int
    """`every`, or the cron pattern's gap from the next run to the one after it; 0 when unknown (a bad pattern)."""
    iterations: int = 0
    """Runs BullMQ has made jobs for (`ic`); 1 and no last run: it has not run yet."""
    next_run: Run | None = None
    """The next run's job (delayed until due; `gone` if removed: then the scheduler makes no more runs)."""
    last_run: Run | None = None
    """The newest earlier run's job; None when it never ran (or the details were not read yet)."""

    @property
    def late_ms(self) -> float:
        """How long the next run is overdue (0 while it is in the future)."""
        return max(0.0, self.seen_at_ms - self.next_ms)

    @property
    def missed(self) -> bool:
        """Overdue by more than one interval: the run after it is due too, and no worker took this one."""
        return self.interval_ms > 0 and self.late_ms > self.interval_ms

    @property
    def schedule(self) -> str:
        """`every 5m` or `cron 0 9 * * * Europe/Paris`."""
        if self.pattern:
            return f"cron {self.pattern}" + (f" {self.tz}" if self.tz else "")
        return f"every {duration(self.every_ms / 1000)}" if self.every_ms else "?"


def duration(seconds: float) -> str:
    """1s, 90s -> 1m30s, 5m, 1h, 1d: a period as written, exact."""
    s = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size and s % size == 0:
            return f"{s // size}{unit}"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{seconds:g}s"


def _int(value: Any) -> int:
    """A number field of a hash; 0 when absent or malformed (one bad record must not hide the others)."""
    try:
        return int(float(value or 0))
    except (TypeError, ValueError):
        return 0


def _zone(tz: str) -> tzinfo:
    return ZoneInfo(tz) if tz else UTC


def cron_times(pattern: str, tz: str, at_ms: int, n: int, *, before: bool) -> list[int]:
    """`n` fire times of `pattern` strictly before (or after) `at_ms`, nearest first; [] for a pattern or zone
    that cannot be read (shown as is; no interval is claimed for it)."""
    try:
        start = datetime.fromtimestamp(at_ms / 1000, tz=_zone(tz))
        it = croniter(pattern, start, second_at_beginning=True)
        step = it.get_prev if before else it.get_next
        return [int(cast(float, step(float)) * 1000) for _ in range(n)]
    except (ValueError, KeyError, TypeError):  # croniter's errors are ValueErrors; an unknown zone a KeyError
        return []


def interval_ms(pattern: str, every_ms: int, tz: str, next_ms: int) -> int:
    if every_ms:
        return every_ms
    after = cron_times(pattern, tz, next_ms, 1, before=False) if pattern else []
    return after[0] - next_ms if after else 0


def earlier_runs(s: Scheduler) -> list[int]:
    """The run times before the next one, newest first (at most LOOK_BACK)."""
    if s.every_ms:
        return [s.next_ms - k * s.every_ms for k in range(1, LOOK_BACK + 1)]
    return cron_times(s.pattern, s.tz, s.next_ms, LOOK_BACK, before=True) if s.pattern else []


def next_runs_of(queues: Iterable[str], replies: Iterable[Any]) -> dict[tuple[str, str], int]:
    """The collector's ZRANGE WITHSCORES replies (one per queue) as NextRuns."""
    return {
        (q, str(member)): int(score)
        for q, reply in zip(queues, replies, strict=True)
        for member, score in reply
    }


async def read_schedulers(
    redis: Redis, next_runs: NextRuns, now_ms: float, prefix: str = BULL_PREFIX
) -> tuple[Scheduler, ...]:
    """Every scheduler in `next_runs` with its hash and its next and last run's job: three pipelined round trips,
    each O(number of schedulers)."""
    keys = sorted(next_runs)
    if not keys:
        return ()
    async with redis.pipeline(transaction=False) as pipe:
        for q, sid in keys:
            pipe.hmget(
                bull_key(q, SCHEDULERS_SUFFIX, sid, prefix=prefix), "name", "pattern", "every", "tz", "ic"
            )
        hashes = await pipe.execute()
    schedulers = []
    for (q, sid), (name, pattern, every, tz, ic) in zip(keys, hashes, strict=True):
        every_ms = _int(every)
        nxt = next_runs[(q, sid)]
        schedulers.append(
            Scheduler(
                q,
                sid,
                str(name or ""),
                str(pattern or ""),
                every_ms,
                str(tz or ""),
                nxt,
                now_ms,
                interval_ms(str(pattern or ""), every_ms, str(tz or ""), nxt),
                _int(ic),
            )
        )
    # which earlier runs still have a job (newest first), then the state of the next run's job and the last one's
    candidates = [earlier_runs(s) for s in schedulers]
    async with redis.pipeline(transaction=False) as pipe:
        for s, runs in zip(schedulers, candidates, strict=True):
            for ms in runs:
                pipe.exists(bull_key(s.queue, scheduler_job_id(s.id, ms), prefix=prefix))
        found = iter(await pipe.execute())
    lasts: list[int | None] = []
    for times in candidates:
        exists = [bool(next(found)) for _ in times]
        lasts.append(next((ms for ms, e in zip(times, exists, strict=True) if e), None))
    jobs = [(s.queue, scheduler_job_id(s.id, s.next_ms), s.next_ms) for s in schedulers]
    jobs += [
        (s.queue, scheduler_job_id(s.id, ms), ms)
        for s, ms in zip(schedulers, lasts, strict=True)
        if ms is not None
    ]
    states = await _runs(redis, jobs, prefix)
    next_runs_read, last_runs_read = iter(states[: len(schedulers)]), iter(states[len(schedulers) :])
    result = []
    for s, last in zip(schedulers, lasts, strict=True):
        if last is not None:
            last_run: Run | None = next(last_runs_read)
        elif s.iterations > 1:  # it has run, but no job of its recent runs is left
            last_run = Run("", "gone", 0)
        else:
            last_run = None
        result.append(replace(s, next_run=next(next_runs_read), last_run=last_run))
    return tuple(result)


async def _runs(redis: Redis, jobs: list[tuple[str, str, int]], prefix: str) -> list[Run]:
    """(queue, job id, run ms) -> how that job stands, one pipelined round trip (membership in the finished and
    delayed sets by ZSCORE and the lock's existence: O(log n) each, never a scan of a list)."""
    async with redis.pipeline(transaction=False) as pipe:
        for q, job_id, _ in jobs:
            pipe.hmget(bull_key(q, job_id, prefix=prefix), "timestamp", "processedOn", "finishedOn")
            for state in ("completed", "failed", "delayed"):
                pipe.zscore(bull_key(q, STATE_KEYS[state][0], prefix=prefix), job_id)
            pipe.exists(bull_key(q, job_id, JOB_LOCK, prefix=prefix))
        replies = await pipe.execute()
    runs = []
    for i, (_, job_id, ms) in enumerate(jobs):
        (created, processed, finished), completed, failed, delayed, locked = replies[i * 5 : i * 5 + 5]
        if created is None:
            runs.append(Run(job_id, "gone", 0))
        elif completed is not None or failed is not None:
            runs.append(Run(job_id, "completed" if completed is not None else "failed", _int(finished)))
        elif locked:
            runs.append(Run(job_id, "active", _int(processed)))
        else:
            runs.append(Run(job_id, "delayed" if delayed is not None else "waiting", ms))
    return runs


class SchedulerBook:
    """What the collector knows of the schedulers between reads: the details (hash, runs) are read again when a
    scheduler appears, goes or moves to another next run (it ran), and otherwise every `every_s` (an outcome
    changes: active -> completed); every tick puts the fresh next runs on them."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._details: dict[tuple[str, str], Scheduler] = {}
        self._read_for: dict[tuple[str, str], int] = {}
        self._read_at = -every_s  # monotonic; the first tick reads them

    def due(self, next_runs: NextRuns, now: float) -> bool:
        return bool(next_runs or self._details) and (
            dict(next_runs) != self._read_for or now - self._read_at >= self.every_s
        )

    def reading(self, next_runs: NextRuns, now: float) -> None:
        """A read of `next_runs` starts: whether or not it succeeds, the next waits for a change or the timer (a
        failing read is not retried on every tick; the details of the last good read stay)."""
        self._read_for, self._read_at = dict(next_runs), now

    def keep(self, schedulers: tuple[Scheduler, ...]) -> None:
        self._details = {(s.queue, s.id): s for s in schedulers}

    def current(self, next_runs: NextRuns, now_ms: float) -> tuple[Scheduler, ...]:
        """The schedulers in `next_runs`, with this tick's next run and clock; a scheduler whose details were not
        read yet shows with its next run only (no interval: never claimed missed on a guess)."""
        out = []
        for (q, sid), nxt in sorted(next_runs.items()):
            known = self._details.get((q, sid))
            if known is None:
                out.append(Scheduler(q, sid, "", "", 0, "", nxt, now_ms, 0))
            elif known.next_ms != nxt:  # ran since the details were read: the runs shown would be stale
                interval = interval_ms(known.pattern, known.every_ms, known.tz, nxt)
                out.append(
                    replace(
                        known,
                        next_ms=nxt,
                        seen_at_ms=now_ms,
                        interval_ms=interval,
                        next_run=None,
                        last_run=None,
                    )
                )
            else:
                out.append(replace(known, seen_at_ms=now_ms))
        return tuple(out)
