"""Searching a queue's jobs with a filter (pool/monitor/filters.py): bounded, honest, cancellable. No Textual.

`search` reads each state newest first in batches (LRANGE/ZREVRANGE of ids, then one script that HMGETs only
the fields the filter needs of every job of the batch), at most `cap` jobs per state, and says exactly how many it scanned and matched
and whether the cap cut it short. Cancelling the task (asyncio) leaves nothing behind: it only reads.
Jobs added while a scan runs shift a state's window; an id is never reported twice, and ids whose hash is
gone meanwhile (removed) are passed over. `top_values` counts the values of one field over a bounded sample.
`preview` is what an operator confirms before a bulk action (pool/monitor/bulk_actions.py).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from redis.asyncio import Redis

from pool.contracts import BULL_PREFIX, STATE_KEYS, bull_key
from pool.monitor.filters import Filter, FilterError, JobFields, display_value, field_value, parse
from pool.monitor.queries import SECRET_WORDS


@dataclass(frozen=True)
class SearchProgress:
    """After each batch: the state being read, how many of its jobs were scanned and matched so far."""

    queue: str
    state: str
    scanned: int
    matched: int
    total_in_state: int


@dataclass(frozen=True)
class Match:
    id: str
    state: str
    name: str
    timestamp: int
    attempts_made: int
    failed_reason: str


@dataclass(frozen=True)
class SearchResult:
    queue: str
    expression: str
    """The normalized expression (`Filter.text`)."""
    states: tuple[str, ...]
    matches: tuple[Match, ...]
    """State by state in the order asked, each newest first."""
    scanned: Mapping[str, int]
    totals: Mapping[str, int]
    """Each state's size when its scan began."""
    capped: Mapping[str, bool]
    """True where the cap stopped the scan before the end of the state."""
    cap: int
    now_ms: int

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.matches]

    @property
    def summary(self) -> str:
        """`scanned 10,000 of 52,310 failed (cap 10,000: cut short), 1,204 matched`."""
        parts = []
        for state in self.states:
            part = f"{self.scanned.get(state, 0):,} of {self.totals.get(state, 0):,} {state}"
            if self.capped.get(state):
                part += f" (cap {self.cap:,}: cut short)"
            parts.append(part)
        return f"scanned {' + '.join(parts) or 'nothing'}, {len(self.matches):,} matched"


def stop_if_cancelled() -> None:
    """Raise CancelledError when this task was asked to stop. Called between batches: a cancel that lands
    inside a redis-py command can be swallowed there (seen with redis-py 8.1: the task's `cancelling()` stays
    set, the command returns), and a scan must still stop at the next batch."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def redis_now_ms(redis: Redis) -> int:
    """Redis' clock, which the job timestamps share (a client's clock may be off)."""
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def _ids(redis: Redis, key: str, kind: str, start: int, stop: int) -> list[str]:
    found: Any = await (
        redis.lrange(key, start, stop) if kind == "list" else redis.zrevrange(key, start, stop)
    )
    return cast(list[str], found)


async def _total(redis: Redis, key: str, kind: str) -> int:
    return int(await (redis.llen(key) if kind == "list" else redis.zcard(key)))


_HMGET_MANY = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HMGET', key, unpack(ARGV)) end
return out
"""
"""HMGET of the same fields over many job hashes in one command: a pipeline of 500 HMGETs spends most of
its time packing and parsing 500 commands in redis-py (measured: bench/search_scan.py)."""


async def _read(
    redis: Redis, queue: str, state: str, ids: list[str], fields: Sequence[str], prefix: str
) -> list[JobFields]:
    """The `fields` of these jobs in one round trip; ids whose hash is gone are left out."""
    if not ids:
        return []
    keys = [bull_key(queue, job_id, prefix=prefix) for job_id in ids]
    rows = cast(list[list[str | None]], await redis.eval(_HMGET_MANY, len(keys), *keys, *fields))
    return [
        JobFields.from_hash(job_id, state, dict(zip(fields, row, strict=True)))
        for job_id, row in zip(ids, rows, strict=True)
        if row[0] is not None  # `name`: every job hash has one
    ]


async def search(
    redis: Redis,
    queue: str,
    states: Sequence[str],
    flt: Filter,
    *,
    cap: int = 10_000,
    batch: int = 500,
    now_ms: int | None = None,
    progress: Callable[[SearchProgress], None] | None = None,
    prefix: str = BULL_PREFIX,
    pause: Callable[[], Awaitable[object]] | None = None,
) -> SearchResult:
    """The jobs of `states` that `flt` matches, newest first, at most `cap` read per state.

    `pause`: awaited before each batch (ma-top's source holds a scan there while a refresh runs, so a scan on
    the same client and loop never slows the tick)."""
    for state in states:
        if state not in STATE_KEYS:
            raise ValueError(f"unknown state {state!r}; one of {', '.join(STATE_KEYS)}")
    now = now_ms if now_ms is not None else await redis_now_ms(redis)
    fields = flt.fields_needed
    matches: list[Match] = []
    scanned: dict[str, int] = {}
    totals: dict[str, int] = {}
    capped: dict[str, bool] = {}
    for state in states:
        suffix, kind = STATE_KEYS[state]
        key = bull_key(queue, suffix, prefix=prefix)
        totals[state] = total = await _total(redis, key, kind)
        seen: set[str] = set()
        offset = read = matched = 0
        while read < cap:
            if pause is not None:
                await pause()
            ids = await _ids(redis, key, kind, offset, offset + min(batch, cap - read) - 1)
            if not ids:
                break
            offset += len(ids)
            fresh = [i for i in ids if i not in seen]
            seen.update(fresh)
            jobs = await _read(redis, queue, state, fresh, fields, prefix)
            if pause is not None:
                await (
                    pause()
                )  # a refresh that began while this batch was read runs first, not after its matching
            read += len(ids)  # repeats count too: a list growing at its head as fast as it is read still ends
            for job in jobs:
                if flt.matches(job, now):
                    matched += 1
                    matches.append(
                        Match(
                            job.id, state, job.name, job.timestamp, job.attempts_made, job.failed_reason or ""
                        )
                    )
            scanned[state] = scanned.get(state, 0) + len(jobs)
            if progress:
                progress(SearchProgress(queue, state, scanned[state], matched, total))
            stop_if_cancelled()
        scanned.setdefault(state, 0)
        capped[state] = read >= cap and await _total(redis, key, kind) > offset
    return SearchResult(queue, flt.text, tuple(states), tuple(matches), scanned, totals, capped, cap, now)


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class Preview:
    """What a bulk action would act on: shown by the CLI and by ma-top's confirm dialog."""

    queue: str
    expression: str
    count: int
    names: tuple[tuple[str, int], ...]
    """The 5 most common job names, with counts."""
    other_names: int
    """Jobs under other names than those 5."""
    oldest: int | None
    newest: int | None
    sample_ids: tuple[str, ...]
    summary: str

    def lines(self) -> list[str]:
        shown = f"`{self.expression}`" if self.expression else "every job"
        lines = [f"{self.count:,} jobs of {self.queue} match {shown}", self.summary]
        if not self.count:
            return lines
        names = ", ".join(f"{name} {n:,}" for name, n in self.names)
        lines.append(f"names: {names}" + (f", other names {self.other_names:,}" if self.other_names else ""))
        if self.oldest is not None and self.newest is not None:
            lines.append(f"created: oldest {_time(self.oldest)}, newest {_time(self.newest)}")
        more = f" ({len(self.sample_ids)} of {self.count:,})" if self.count > len(self.sample_ids) else ""
        lines.append(f"ids: {', '.join(self.sample_ids)}{more}")
        return lines


def _ranked(counts: Counter[str]) -> tuple[tuple[str, int], ...]:
    """Most common first; ties in name order, so the same jobs always read the same."""
    return tuple(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def preview(result: SearchResult) -> Preview:
    names = _ranked(Counter(m.name for m in result.matches))
    stamps = [m.timestamp for m in result.matches if m.timestamp]
    return Preview(
        result.queue,
        result.expression,
        len(result.matches),
        tuple(names[:5]),
        sum(n for _, n in names[5:]),
        min(stamps) if stamps else None,
        max(stamps) if stamps else None,
        tuple(m.id for m in result.matches[:10]),
        result.summary,
    )


@dataclass(frozen=True)
class TopValues:
    queue: str
    field: str
    state: str
    sampled: int
    """How many jobs were read (the newest of the state)."""
    total: int
    """The state's size."""
    counts: tuple[tuple[str, int], ...]
    """Most common first; a job without the field counts as `(missing)`."""

    def lines(self, limit: int = 20) -> list[str]:
        head = f"{self.field} over the newest {self.sampled:,} of {self.total:,} {self.state} jobs of {self.queue}"
        rows = [
            f"{n:>9,}  {n / self.sampled:6.1%}  {value}" for value, n in self.counts[:limit] if self.sampled
        ]
        rest = len(self.counts) - limit
        return [head, *rows, *([f"... and {rest:,} other values"] if rest > 0 else [])]


def _secret(field: str) -> bool:
    return any(word in part.lower() for part in field.split(".")[1:] for word in SECRET_WORDS)


async def top_values(
    redis: Redis,
    queue: str,
    field: str,
    *,
    sample: int = 10_000,
    state: str = "waiting",
    batch: int = 500,
    prefix: str = BULL_PREFIX,
    pause: Callable[[], Awaitable[object]] | None = None,
) -> TopValues:
    """The most common values of `field` (`name`, `data.organizationId`, ...) over the newest `sample` jobs of
    `state`. The field path means what it means in a filter; values under a secret-looking key are masked."""
    try:
        parse(f"{field}!=_")
    except FilterError as error:
        raise FilterError(field, error.position, error.token, error.problem) from None
    if state not in STATE_KEYS:
        raise ValueError(f"unknown state {state!r}; one of {', '.join(STATE_KEYS)}")
    suffix, kind = STATE_KEYS[state]
    key = bull_key(queue, suffix, prefix=prefix)
    total = await _total(redis, key, kind)
    now = await redis_now_ms(redis)
    fields = ("name", "timestamp", "atm", "failedReason", "data")
    counts: Counter[str] = Counter()
    seen: set[str] = set()
    offset = 0
    while offset < sample:  # repeats (a list growing at its head) count against the sample: it always ends
        if pause is not None:
            await pause()
        ids = await _ids(redis, key, kind, offset, offset + min(batch, sample - offset) - 1)
        if not ids:
            break
        offset += len(ids)
        fresh = [i for i in ids if i not in seen]
        seen.update(fresh)
        jobs = await _read(redis, queue, state, fresh, fields, prefix)
        if pause is not None:
            await pause()
        for job in jobs:
            value = display_value(field_value(job, field, now))
            counts["***" if _secret(field) and value != "(missing)" else value] += 1
        stop_if_cancelled()
    return TopValues(queue, field, state, sum(counts.values()), total, _ranked(counts))
