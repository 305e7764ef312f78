"""The incident report: one markdown file an on-call engineer attaches to the incident, written by ma-top's `W`
key and by `ma-top --report FILE [--hours N]` from the same `DataSource`, so both write the same thing.

What it holds, each section read on its own (one that fails says so, the others are still written): the queue
table as `ma-top --once` prints it, the findings (duplicates included, as `--once`), the top failure groups with
sample ids and one stack trace each, the events of the range coalesced, supervisord's processes and restarts,
Redis' health, and the operator actions journaled in the range. Secrets are masked twice: job data through
`queries.redact` (the job detail), then the whole text through `scrub.Scrubber` (reasons, traces and messages
are free text). No Textual here.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from pool.contracts import AUDIT_STREAM, EVENTS_MAXLEN, EVENTS_STREAM
from pool.monitor import report_md as md
from pool.monitor.duplicates import duplicate_findings, with_duplicates
from pool.monitor.events import coalesce, ts_of
from pool.monitor.findings import History, Thresholds, as_text, findings
from pool.monitor.plain_text import plain
from pool.monitor.queries import NEWEST_FAILED
from pool.monitor.scrub import Scrubber, known_secrets
from pool.monitor.snapshot import Snapshot
from pool.monitor.source import DataSource
from pool.monitor.supervisor_source import ProcessInfo

DEFAULT_HOURS = 2.0
READ_TIMEOUT_S = 10.0
"""Each section's read gives up after this long: a hung Redis or supervisord costs one section, not the report."""
TOP_GROUPS = 5
EVENT_ROWS = 200
"""Coalesced event rows written at most (the newest kept)."""
MAX_EVENT_READS = 5
"""Reads of the event stream per report (each at most the capped stream's length)."""

T = TypeVar("T")


def default_path(now: float | None = None) -> Path:
    """`var/incident-20261203T075011Z.md`: where ma-top's key writes."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return Path("var") / f"incident-{stamp}.md"


async def write_report(
    source: DataSource,
    path: Path,
    *,
    hours: float = DEFAULT_HOURS,
    thresholds: Thresholds | None = None,
    last_snapshot: Snapshot | None = None,
    restarts_seen: Mapping[tuple[str, str], int] | None = None,
    env: Mapping[str, str] = os.environ,
) -> Path:
    """Read everything, write the report to `path` (its folder made if missing); returns the absolute path."""
    text = await build_report(
        source, hours=hours, thresholds=thresholds, last_snapshot=last_snapshot, restarts_seen=restarts_seen
    )
    return await asyncio.to_thread(_write, path, Scrubber(known_secrets(env)).scrub(text))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path.resolve()


@dataclass
class _Reads:
    """What was read, and each source's failure (what -> why)."""

    snapshot: Snapshot
    processes: list[ProcessInfo] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def redis_up(self) -> bool:
        return self.snapshot.redis.up and "redis" not in self.snapshot.errors


async def build_report(
    source: DataSource,
    *,
    hours: float = DEFAULT_HOURS,
    thresholds: Thresholds | None = None,
    last_snapshot: Snapshot | None = None,
    restarts_seen: Mapping[tuple[str, str], int] | None = None,
    now: float | None = None,
) -> str:
    """The report as markdown (not yet scrubbed of free-text secrets: `write_report` does that)."""
    now = time.time() if now is None else now
    since = now - hours * 3600
    snapshot = await source.fetch()  # the collector answers within its own timeout, Redis down or not
    reads = _Reads(snapshot)
    procs, proc_errors = await _guard(source.processes(), ([], {}), "supervisord", reads.errors)
    reads.processes = procs
    out = [
        f"# Incident report {md.utc(now)}",
        "",
        f"- Range: {md.utc(since)} to {md.utc(now)} (the last {hours:g} h)",
        f"- Written by {getpass.getuser()}@{socket.gethostname()} with ma-top",
        "- Redis: " + ("up" if reads.redis_up else f"**unreachable** ({md.cell(snapshot.redis.error)})"),
        "- Secrets are masked: values under secret-looking keys, credential-looking text, known secret values.",
        "",
    ]
    thresholds = thresholds or Thresholds()
    out += _queues(reads, last_snapshot, thresholds.rate_window_s)
    out += await _findings(source, reads, thresholds)
    out += await _failures(source, reads, since)
    out += await _events(source, reads, since)
    out += _processes(reads, proc_errors, since, restarts_seen or {})
    out += _redis(reads, last_snapshot)
    out += await _audit(source, since)
    return "\n".join(out)


async def _guard(read: Awaitable[T], default: T, what: str, errors: dict[str, str]) -> T:
    """The read's answer, or `default` with `errors[what]` saying why not."""
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            return await read
    except Exception as error:  # noqa: BLE001 - one source failing: said in its section, the rest written
        if isinstance(error, TimeoutError) and not str(error):
            errors[what] = f"no answer within {READ_TIMEOUT_S:g}s"
        else:
            errors[what] = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        return default


def _redis_problem(reads: _Reads) -> dict[str, str]:
    if reads.redis_up:
        return {}
    return {"Redis": reads.snapshot.errors.get("redis") or reads.snapshot.redis.error or "no answer"}


def _queues(reads: _Reads, last: Snapshot | None, window_s: float) -> list[str]:
    snapshot = reads.snapshot
    problems = {**_redis_problem(reads), **{k: v for k, v in snapshot.errors.items() if k != "redis"}}
    if reads.redis_up:
        body = ["Now, as `ma-top --once` prints it:", "", *md.fenced(plain(snapshot, window_s))]
    elif last is not None and last.queues:
        known = replace(last, redis=snapshot.redis)
        body = [
            f"Redis did not answer: the queues as last read, at {md.utc(last.known_at or last.taken_at)}:",
            "",
            *md.fenced(plain(known, window_s)),
        ]
    else:
        body = ["Redis did not answer: no queue could be read."]
    return md.section("Queues", snapshot.taken_at, problems, body)


async def _findings(source: DataSource, reads: _Reads, thresholds: Thresholds) -> list[str]:
    snapshot, problems = reads.snapshot, dict(reads.errors)
    found = findings(snapshot, History(), reads.processes or None, thresholds)
    if reads.redis_up:  # the slower duplicate check, run once, as `ma-top --once` does
        names = [q.name for q in snapshot.queues]
        groups = await _guard(source.duplicate_groups(names), [], "duplicates", problems)
        found = with_duplicates(found, duplicate_findings(groups))
    body = [
        f"What is wrong now, as `ma-top --once` decides it (rates over the last {thresholds.rate_window_s:g} s, "
        "not over the report's range):",
        "",
        *md.fenced(as_text(found)),
    ]
    return md.section("Findings", time.time(), problems, body)


async def _failures(source: DataSource, reads: _Reads, since: float) -> list[str]:
    title = "Top failure groups"
    if not reads.redis_up:
        return md.section(title, time.time(), _redis_problem(reads), ["Not read: Redis did not answer."])
    problems: dict[str, str] = {}
    names = [q.name for q in reads.snapshot.queues]
    groups = await _guard(source.failure_groups(names), [], "failed jobs", problems)
    recent = [g for g in groups if g.last_seen >= since * 1000]
    body = [
        f"Each queue's newest {NEWEST_FAILED:,} failed jobs grouped by signature (the reason without its ids, "
        f"and the top frame); the groups with a failure in the range, biggest first ({len(recent)} of "
        f"{len(groups)} groups; counts are over the jobs read).",
        "",
    ]
    for n, g in enumerate(recent[:TOP_GROUPS], 1):
        tried: list[str] = []
        trace = ""
        for job_id in g.ids[:3]:  # the newest whose trace is still there (a job may be gone meanwhile)
            detail = await _guard(source.job_detail(g.queue, job_id), None, f"job {job_id}", problems)
            tried.append(job_id)
            if detail and (trace := md.trimmed_trace(detail.get("stacktrace"))):
                tried = [job_id]
                break
        body += md.failure_group(n, g, ", ".join(tried), trace)
    if not recent:
        body.append("No job failed in the range.")
    return md.section(title, time.time(), problems, body)


async def _events(source: DataSource, reads: _Reads, since: float) -> list[str]:
    title = "Recent events (coalesced)"
    if not reads.redis_up:
        return md.section(title, time.time(), _redis_problem(reads), ["Not read: Redis did not answer."])
    problems: dict[str, str] = {}
    since_ms = int(since * 1000)
    cursor = f"{since_ms - 1}-18446744073709551615"  # after the last id of the millisecond before the range
    entries: list[tuple[str, dict[str, str]]] = []
    for _ in range(MAX_EVENT_READS):
        chunk = await _guard(source.events_after(cursor), [], EVENTS_STREAM, problems)
        entries += chunk
        if len(chunk) < EVENTS_MAXLEN:
            break
        cursor = chunk[-1][0]
    events = [e for _id, e in entries if ts_of(e) == 0 or ts_of(e) >= since_ms]
    rows = coalesce(events)
    body = [
        f"{len(events):,} events of the range read from `{EVENTS_STREAM}` by stream id, coalesced into "
        f"{len(rows):,} rows (repeats of a kind, queue and message within a minute; `events` counts stream "
        "records, `stands for` what counted kinds add up to)."
    ]
    if entries and len(entries) >= EVENTS_MAXLEN:
        body.append(
            f"The stream keeps about {EVENTS_MAXLEN:,} events: the range's events before "
            f"{md.utc(ts_of(entries[0][1]) / 1000)} may have been trimmed."
        )
    if len(rows) > EVENT_ROWS:
        body.append(f"The newest {EVENT_ROWS} rows; {len(rows) - EVENT_ROWS} older rows left out.")
    body += ["", *md.event_rows(rows[-EVENT_ROWS:])] if rows else ["", "No event in the range."]
    return md.section(title, time.time(), problems, body)


def _processes(
    reads: _Reads, endpoint_errors: dict[str, str], since: float, seen: Mapping[tuple[str, str], int]
) -> list[str]:
    problems = {f"supervisord {label}": why for label, why in endpoint_errors.items()}
    problems.update({k: v for k, v in reads.errors.items() if k == "supervisord"})
    if reads.processes:
        body = md.processes(reads.processes, since)
    else:
        body = ["No supervisord process read (no endpoint given with `--supervisor`, or none answered)."]
    beats = f"{len(reads.snapshot.workers)} worker process(es)" if reads.redis_up else "not read (Redis down)"
    body += [*md.restarts_seen(seen), "", f"Pool heartbeats in Redis: {beats}."]
    return md.section("Processes and restarts", time.time(), problems, body)


def _redis(reads: _Reads, last: Snapshot | None) -> list[str]:
    body = md.redis_health(reads.snapshot.redis)
    if not reads.redis_up and last is not None and last.redis.up:
        body += ["", f"Last known health ({md.utc(last.taken_at)}):", *md.redis_health(last.redis)]
    return md.section("Redis health", reads.snapshot.taken_at, _redis_problem(reads), body)


async def _audit(source: DataSource, since: float) -> list[str]:
    title = "Operator actions (audit journal)"
    problems: dict[str, str] = {}
    read = await _guard(source.audit_since(int(since * 1000)), None, AUDIT_STREAM, problems)
    if read is None:
        return md.section(title, time.time(), problems, ["Not read."])
    if read.error:
        problems[AUDIT_STREAM] = read.error
    body = [f"Read from `{read.origin}`" + (" (this host's actions only)." if read.error else ".")]
    if read.cut:
        body.append(f"More actions than read: the newest {len(read.entries)} only.")
    return md.section(title, time.time(), problems, [*body, "", *md.audit_entries(read.entries)])
