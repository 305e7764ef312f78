"""The incident report's markdown: one function per section, from what was read to text. No reads, no Textual.

Every section says when it was read and what could not be read; times are UTC (a report is passed around).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pool.monitor.events import EventRow
from pool.monitor.finding import age
from pool.monitor.plain_text import times, total, where
from pool.monitor.queries import FailureGroup
from pool.monitor.snapshot import RedisHealth
from pool.monitor.supervisor_source import ProcessInfo, endpoint_label

TRACE_LINES = 25
"""A stack trace is cut to its last lines (the innermost frames and the error)."""
TRACE_CHARS = 4000
IDS_SHOWN = 10


def utc(seconds: float) -> str:
    """Epoch seconds as `2026-12-03 07:50:11 UTC`; 0 (never) as `-`."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if seconds else "-"


def utc_time(seconds: float) -> str:
    """Epoch seconds as `07:50:11` (UTC), for a table inside a report whose dates are in its header."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%H:%M:%S") if seconds else "-"


def cell(value: Any) -> str:
    """A markdown table cell: one line, no unescaped pipe."""
    return " ".join(str(value).split()).replace("|", "\\|")


def table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def fenced(text: str) -> list[str]:
    """A text block; a fence inside the text cannot end it early."""
    return ["```text", text.replace("```", "ʼʼʼ"), "```"]


def section(title: str, read_at: float, problems: Mapping[str, str], body: list[str]) -> list[str]:
    """`## title`, when it was read, what could not be read, then the body."""
    lines = [f"## {title}", "", f"Read {utc(read_at)}."]
    if problems:
        lines.append(
            "Could not read: " + "; ".join(f"{what} ({cell(why)})" for what, why in problems.items()) + "."
        )
    return [*lines, "", *body, ""]


def failure_group(n: int, g: FailureGroup, trace_of: str, trace: str) -> list[str]:
    ids = ", ".join(g.ids[:IDS_SHOWN]) + (f" … ({len(g.ids)} in all)" if len(g.ids) > IDS_SHOWN else "")
    signature = cell(g.signature).replace("`", "'")
    lines = [
        f"### {n}. {g.queue}: {g.count} job(s), `{signature}`",
        "",
        f"- failed from {utc(g.first_seen / 1000)} to {utc(g.last_seen / 1000)}",
        f"- job names: {', '.join(g.names)}" + (f"; top frame `{g.top_frame}`" if g.top_frame else ""),
        f"- example reason: {cell(g.example)}",
        f"- sample job ids (newest first): {ids}",
    ]
    if trace:
        lines += [
            f"- stack trace of job {trace_of} (its last attempt, the last {TRACE_LINES} lines at most):",
            "",
        ]
        lines += fenced(trace)
    else:
        lines.append(f"- no stack trace stored for {trace_of or 'the sample jobs'}")
    return [*lines, ""]


def trimmed_trace(stacktrace: Any) -> str:
    """The last attempt's trace from a job detail's `stacktrace` (a list of traces, oldest first), cut short."""
    traces = stacktrace if isinstance(stacktrace, list) else [stacktrace] if stacktrace else []
    last = str(traces[-1]) if traces else ""
    lines = last.rstrip().splitlines()
    text = "\n".join(lines[-TRACE_LINES:])
    return text[-TRACE_CHARS:]


def event_rows(rows: Sequence[EventRow]) -> list[str]:
    return table(
        ("first", "last", "kind", "queue", "events", "stands for", "where", "message"),
        (
            (
                utc_time(r.first_ms / 1000),
                utc_time(r.last_ms / 1000),
                r.kind,
                r.queue or "-",
                times(r) or "×1",
                total(r) or "-",
                where(r, width=60) or "-",
                r.message[:300],
            )
            for r in rows
        ),
    )


def processes(procs: Sequence[ProcessInfo], since: float) -> list[str]:
    lines = table(
        ("process", "host", "state", "pid", "started", "uptime", "last exit", "exit status", "note"),
        (
            (
                p.full_name,
                endpoint_label(p.endpoint),
                p.state,
                p.pid or "-",
                utc(p.start),
                age(p.uptime_s) if p.uptime_s else "-",
                utc(p.stop),
                p.exitstatus if p.state != "RUNNING" else "-",
                (p.spawnerr or p.description)[:80],
            )
            for p in procs
        ),
    )
    restarted = [p for p in procs if p.start >= since and 0 < p.stop <= p.start]
    down = [p for p in procs if p.state != "RUNNING"]
    lines += ["", "Restarts in the range (supervisord keeps each process's last start and exit only):"]
    lines += [
        f"- {p.full_name} on {endpoint_label(p.endpoint)}: exited {utc(p.stop)}, started again "
        f"{utc(p.start)} (now {p.state})"
        for p in restarted
    ] or ["- none: no process started in the range after an exit"]
    if down:
        lines += ["", f"Not running: {', '.join(f'{p.full_name} {p.state}' for p in down)}."]
    return lines


def restarts_seen(seen: Mapping[tuple[str, str], int]) -> list[str]:
    """ma-top's own count of pid changes while it watched (it sees restarts supervisord forgets)."""
    changed = {k: n for k, n in seen.items() if n}
    if not changed:
        return []
    return [
        "",
        "Restarts ma-top saw while it was open (pid changes):",
        *(f"- {name} on {endpoint_label(endpoint)}: {n}" for (endpoint, name), n in sorted(changed.items())),
    ]


def redis_health(r: RedisHealth) -> list[str]:
    if not r.up:
        return [f"Redis is **unreachable**: {cell(r.error).rstrip('.') or 'no answer'}."]
    maxmem = f"{r.maxmemory / 2**20:.0f} MiB" if r.maxmemory else "no limit"
    pct = f" ({100 * r.used_memory / r.maxmemory:.0f} %)" if r.maxmemory else ""
    policy = r.policy + ("" if r.policy == "noeviction" else " (BullMQ needs noeviction)")
    return [
        f"- up, version {r.version or '?'}",
        f"- memory {r.used_memory / 2**20:.1f} MiB of {maxmem}{pct}",
        f"- maxmemory-policy {policy}",
        f"- clients {r.clients}, ops/s {r.ops_per_sec}, evicted keys {r.evicted_keys}",
        f"- connection failures seen by the pool: {r.connection_failures}",
    ]


def audit_entries(entries: Sequence[Mapping[str, str]]) -> list[str]:
    if not entries:
        return ["No operator action journaled in the range."]
    return table(
        ("time", "who", "action", "target", "ids", "outcome"),
        (
            (
                utc(int(e.get("ts") or 0) / 1000),
                e.get("who", "?"),
                e.get("action", "?"),
                e.get("target", ""),
                _ids(e.get("ids", "")),
                e.get("outcome", ""),
            )
            for e in entries
        ),
    )


def _ids(raw: str) -> str:
    try:
        ids = [str(i) for i in json.loads(raw or "[]")]
    except (ValueError, TypeError):
        return raw[:200]
    if not ids:
        return "-"
    shown = ", ".join(ids[:IDS_SHOWN])
    return f"{len(ids)}: {shown}" + (" …" if len(ids) > IDS_SHOWN else "")
