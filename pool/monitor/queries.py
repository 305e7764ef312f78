"""ma-top's reads beyond the snapshot: a page of a state's jobs, one job's detail, failures
grouped by signature, a queue's typical run time. No Textual here: tested on its own.

Every read is O(page) or O(1) in the number of jobs (failure grouping: O(newest) per queue). The clients
are made with decode_responses=True: the casts narrow redis-py's `bytes | str` replies to the str they are.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

from bullmq import Queue
from redis.asyncio import Redis

from pool.contracts import BULL_PREFIX, FLOW_PENDING, JOB_STATES, STATE_KEYS, bull_key
from pool.queue_table import QUEUES

PAGE = 50
NEWEST_FAILED = 2000
"""Failure groups are made of each queue's newest this many failed jobs."""
SECRET_WORDS = (
    "secret",
    "password",
    "token",
    "apikey",
    "api_key",
    "key",
    "authorization",
    "signature",
    "presigned",
)
BROWSABLE_STATES = JOB_STATES
"""The states the jobs view pages through (lists hold newest at index 0, sorted sets are scored by time;
waiting-children holds flow parents, scored by when they were added)."""


@dataclass(frozen=True)
class JobRow:
    id: str
    name: str
    timestamp: int
    attempts_made: int
    failed_reason: str
    processed_on: int
    finished_on: int
    pending_children: int | None = None
    """A flow parent's children not finished yet (`waiting-children` pages only; None elsewhere)."""


async def jobs_page(
    redis: Redis, queue: str, state: str, page: int = 0, size: int = PAGE, prefix: str = BULL_PREFIX
) -> tuple[list[JobRow], int]:
    """One page of a state, newest first: LRANGE/ZREVRANGE plus one pipelined HMGET per row."""
    suffix, kind = STATE_KEYS[state]
    key = bull_key(queue, suffix, prefix=prefix)
    start, stop = page * size, page * size + size - 1
    found: Any
    if kind == "list":
        total, found = await asyncio.gather(redis.llen(key), redis.lrange(key, start, stop))
    else:
        total, found = await asyncio.gather(redis.zcard(key), redis.zrevrange(key, start, stop))
    ids = cast(list[str], found)
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(
                bull_key(queue, job_id, prefix=prefix),
                "name",
                "timestamp",
                "atm",
                "failedReason",
                "processedOn",
                "finishedOn",
            )
        if state == "waiting-children":  # what each parent waits for: O(page), one SCARD per row
            for job_id in ids:
                pipe.scard(bull_key(queue, job_id, FLOW_PENDING, prefix=prefix))
        replies = await pipe.execute()
    fields, pending = replies[: len(ids)], replies[len(ids) :]
    rows = [
        JobRow(
            str(job_id),
            f[0] or "?",
            int(f[1] or 0),
            int(f[2] or 0),
            f[3] or "",
            int(f[4] or 0),
            int(f[5] or 0),
            int(pending[i]) if pending else None,
        )
        for i, (job_id, f) in enumerate(zip(ids, fields, strict=True))
    ]
    return rows, int(total)


def redact(value: Any) -> Any:
    """Secrets never reach the screen: values under secret-looking keys are masked, recursively."""
    if isinstance(value, dict):
        return {
            k: "***" if any(w in k.lower() for w in SECRET_WORDS) else redact(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


async def job_detail(
    redis: Redis, queue: str, job_id: str, prefix: str = BULL_PREFIX
) -> dict[str, Any] | None:
    raw = cast(dict[str, str], await redis.hgetall(bull_key(queue, job_id, prefix=prefix)))
    if not raw:
        return None
    logs = await redis.lrange(bull_key(queue, job_id, "logs", prefix=prefix), 0, 99)
    state = await Queue(queue, {"connection": redis, "prefix": prefix}).getJobState(job_id)

    def loads(text: str | None, default: Any) -> Any:
        try:
            return json.loads(text) if text else default
        except ValueError:
            return text

    data = loads(raw.get("data"), {})
    spec = QUEUES.get(queue)
    return {
        "id": job_id,
        "queue": queue,
        "name": raw.get("name"),
        "state": state,
        "dedupId": raw.get("deid"),  # BullMQ's deduplication id (the producer's `deduplication: {id}`)
        # the payload fields the queue's handler is idempotent per (`QueueSpec.idempotency_key`)
        "idempotencyKey": spec.idempotency_key(raw.get("name") or "", data) if spec else None,
        "data": redact(data),
        "opts": loads(raw.get("opts"), {}),
        "attemptsMade": int(raw.get("atm") or raw.get("attemptsMade") or 0),
        "failedReason": raw.get("failedReason"),
        "stacktrace": loads(raw.get("stacktrace"), []),
        "returnvalue": redact(loads(raw.get("returnvalue"), None)),
        "progress": loads(raw.get("progress"), 0),
        "timestamp": int(raw.get("timestamp") or 0),
        "processedOn": int(raw.get("processedOn") or 0),
        "finishedOn": int(raw.get("finishedOn") or 0),
        "logs": logs,
    }


@dataclass(frozen=True)
class FailureGroup:
    queue: str
    signature: str
    example: str
    top_frame: str
    count: int
    first_seen: int
    last_seen: int
    names: tuple[str, ...]
    ids: tuple[str, ...]


_PHRASES = "|".join(sorted((re.escape(s.phrase) for s in HTTPStatus), key=len, reverse=True))
_KEPT = [
    # an HTTP status in a status context: before its reason phrase ('503 Service Unavailable'), after a word
    # that announces one (answered 429, status code 500, HTTP 502), or first after `refused|rejected ...:`/`(`
    re.compile(rf"\b([1-5]\d\d (?:{_PHRASES}))\b"),
    re.compile(
        r"\b(?:answered|returned|responded|status(?: code)?|status_code|HTTP(?:/\d(?:\.\d)?)?)(?: with)?[\s:=]+"
        r"([1-5]\d\d)\b",
        re.IGNORECASE,
    ),
    re.compile(r"\b(?:refused|rejected)\b[^:;()]*?(?::\s*|\(\s*)([1-5]\d\d)\b"),
    # an exception type: ConnectError, stripe.error.CardError, S3UploadFailedError, a leading `TokenRefused:`
    re.compile(
        r"\b((?:[A-Za-z_]\w*\.)*[A-Z][A-Za-z0-9]*(?:Error|Exception|Warning|Timeout|Exit|Interrupt))\b"
    ),
    re.compile(r"^((?:[A-Za-z_]\w*\.)*[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+)(?=: )"),
]
_VOLATILE = [
    (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uuid>"),
    (r"\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d)?)?", "<time>"),
    (r"\b\d+(?:\.\d+)?\s?(?:[mun]s|µs|s|secs?|seconds?|m|mins?|minutes?|h|hours?|d|days?)\b", "<duration>"),
    (r"\b0x[0-9a-fA-F]+\b", "<hex>"),
    (r"\b(?=[A-Za-z0-9_\-]*\d)(?=[A-Za-z0-9_\-]*[A-Za-z])[A-Za-z0-9_\-]+\b", "<id>"),  # letters and digits
    (r"\b[a-z]+_[A-Za-z0-9_]+\b", "<id>"),  # snake ids such as org_nope
    (r"\d+(\.\d+)?", "<n>"),
]
_MARK = 0xF0000
_MARKS = "[\U000f0000-\U000fffff]"
"""Kept parts stand in as private-use characters, which no pattern above matches, until the end."""


def normalize(reason: str) -> str:
    """`tenant org_acme_t1 is not in organization org_x` and its siblings share one signature; ids, counts,
    durations and times go, HTTP statuses and exception types stay (a 429 is not a 503)."""
    text = reason.strip().splitlines()[0] if reason.strip() else ""
    kept: list[str] = []

    def keep(match: re.Match[str]) -> str:
        kept.append(match.group(1))
        whole, at = match.group(0), match.start()
        return whole[: match.start(1) - at] + chr(_MARK + len(kept) - 1) + whole[match.end(1) - at :]

    def quoted(match: re.Match[str]) -> str:
        inner = match.group(0)[1:-1]
        return match.group(0) if len(inner) == 1 and ord(inner) >= _MARK else "<str>"

    text = re.sub(_MARKS, "", text)  # a reason cannot smuggle markers in
    for kept_part in _KEPT:
        text = kept_part.sub(keep, text)
    # quoted text goes, unless it is a kept status line: httpx's `Server error '503 Service Unavailable' for ...`
    text = re.sub(r"'[^']*'|\"[^\"]*\"", quoted, text)
    for pattern, placeholder in _VOLATILE:
        text = re.sub(pattern, placeholder, text)
    text = re.sub(_MARKS, lambda m: kept[ord(m.group(0)) - _MARK], text)
    return text[:200]


def top_frame(stacktrace: str | None) -> str:
    """The innermost `File "...", line N, in func` of the last traceback, without the line number."""
    try:
        traces = json.loads(stacktrace) if stacktrace else []
    except ValueError:
        return ""
    frames = re.findall(r'File "([^"]+)", line \d+, in (\S+)', traces[-1]) if traces else []
    if not frames:
        return ""
    path, func = frames[-1]
    return f"{'/'.join(path.split('/')[-2:])}:{func}"


async def failure_groups(
    redis: Redis, queues: list[str], newest: int = NEWEST_FAILED, prefix: str = BULL_PREFIX
) -> list[FailureGroup]:
    """Group the newest failed jobs of each queue by signature (normalized reason + top frame).

    Bounded by `newest` per queue; runs when the Failures view refreshes, not on the overview's tick.
    """
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for queue in queues:
        ids = cast(list[str], await redis.zrevrange(bull_key(queue, "failed", prefix=prefix), 0, newest - 1))
        if not ids:
            continue
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(
                    bull_key(queue, job_id, prefix=prefix), "name", "failedReason", "stacktrace", "finishedOn"
                )
            rows = await pipe.execute()
        for job_id, (name, reason, stack, finished) in zip(ids, rows, strict=True):
            key = (queue, normalize(reason or ""), top_frame(stack))
            g = groups.setdefault(
                key, {"example": reason or "", "count": 0, "first": 0, "last": 0, "names": set(), "ids": []}
            )
            at = int(finished or 0)
            g["count"] += 1
            g["first"] = min(g["first"] or at, at)
            g["last"] = max(g["last"], at)
            g["names"].add(name or "?")
            g["ids"].append(job_id)
    result = [
        FailureGroup(
            q,
            sig,
            g["example"][:300],
            frame,
            g["count"],
            g["first"],
            g["last"],
            tuple(sorted(g["names"])),
            tuple(g["ids"]),
        )
        for (q, sig, frame), g in groups.items()
    ]
    return sorted(result, key=lambda g: (-g.count, g.queue))


async def typical_duration_ms(
    redis: Redis, queue: str, sample: int = 50, prefix: str = BULL_PREFIX
) -> float | None:
    """Median run time of the newest completed jobs (O(sample)): what "far longer than usual" compares to."""
    ids = cast(list[str], await redis.zrevrange(bull_key(queue, "completed", prefix=prefix), 0, sample - 1))
    if not ids:
        return None
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(bull_key(queue, job_id, prefix=prefix), "processedOn", "finishedOn")
        rows = await pipe.execute()
    runs = sorted(int(f) - int(p) for p, f in rows if p and f)
    return float(runs[len(runs) // 2]) if runs else None


def is_overdue(
    processed_on_ms: int, now_ms: float, typical_ms: float | None, floor_ms: float = 30_000
) -> bool:
    """An active job running 5x longer than the queue's median (and at least 30 s) is flagged."""
    if not processed_on_ms:
        return False
    return now_ms - processed_on_ms > max(floor_ms, 5 * (typical_ms or 0))
