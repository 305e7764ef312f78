"""A finding (what is wrong, why, the figures, what to do) and the thresholds where findings start: the leaf of
the rule set (`pool.monitor.findings` and its rule modules build on it). No Redis, no Textual here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Literal

Severity = Literal["critical", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("critical", "warning", "info")

BADGES = {
    "no-workers": "NO WORKERS",
    "backlog": "BACKLOG",
    "backlog-growing": "GROWING",
    "retries": "RETRIES",
    "stalled": "STALLED",
    "throttled": "THROTTLED",
    "rate-limited": "RATE LIMITED",
    "no-handler": "NO HANDLER",
    "paused": "PAUSED",
    "long-running": "LONG JOB",
    "failure-growing": "FAILING",
    "duplicates": "DUPLICATES",
    "scheduler-missed": "MISSED",
}
"""Queue finding kind -> the badge on ma-top's queues view, in the order badges are shown."""

SUPERVISORCTL = "supervisorctl -c supervisord.conf"


@dataclass(frozen=True)
class Finding:
    severity: Severity
    kind: str
    subject: str
    """The queue, process or host it is about (`redis` for Redis itself)."""
    cause: str
    """One line: what is wrong and why."""
    evidence: str
    """The figures it was decided on."""
    action: str
    """The ma-top key and the command that act on it."""
    goto: str = ""
    """Where ma-top shows the evidence, as `<view>` or `<view>:<target>` (enter on the finding goes there):
    `queue:<name>` (its jobs), `process:<group>` (processes view, cursor on it), `events:<filter>`,
    `failures:<queue>`, `redis`, `bulk`, `job:<queue>:<id>`, `schedulers`. Empty: the subject's row in the queues view."""

    def line(self) -> str:
        return f"{self.severity.upper():8} {self.subject}: {self.cause} [{self.evidence}] -> {self.action}"


@dataclass(frozen=True)
class Thresholds:
    """Where a finding starts; each field is read from `MA_TOP_<FIELD>` (e.g. MA_TOP_RETRIES_PER_MIN)."""

    billing_usage_backlog: int = 300
    """billing-usage jobs waiting (the runbook's "more than a few hundred"; Prometheus MaBillingUsageBacklog)."""
    retries_per_min: float = 5.0
    """Retried attempts per minute, any queue (Prometheus MaPaymentSyncRetriesHigh: > 5/min)."""
    stalled_per_min: float = 0.0
    """Stalled jobs per minute: by default any stall within the window."""
    throttled_per_min: float = 0.0
    """Identity 429s per minute: by default any within the window (Prometheus MaIdentityThrottling: > 0)."""
    redis_memory_pct: float = 80.0
    """Redis used_memory as a percentage of maxmemory (when maxmemory is set)."""
    rate_window_s: float = 300.0
    """The window the per-minute rates are taken over."""
    backlog_growth_per_min: float = 1.0
    """A backlog growing faster than this (arrivals minus departures, per minute, over the rate window, and still
    growing over its last third) is a finding."""
    backlog_growth_min: int = 20
    """...and only once it grew by at least this many jobs (a handful more is noise, not an incident)."""
    rss_growth_pct: float = 20.0
    """RSS growth over `rss_growth_window_s`, in percent, above which steady growth is a memory-growth finding."""
    rss_growth_window_s: float = 900.0
    """The window RSS growth is judged over (at most the hour of RSS kept)."""
    rss_warmup_s: float = 120.0
    """Seconds of a process's life before its RSS is judged (start-up imports and first jobs fill memory)."""
    downstream_errors_per_min: float = 1.0
    """A downstream's 5xx answers, timeouts and connection errors per minute over the rate window (whole
    minutes: the pool counts them by the minute)."""
    failure_group_growth: int = 10
    """Jobs failed with one signature within the rate window (final failures; a retried attempt is `retries`)."""
    long_running_s: float = 600.0
    """An active job running longer than this (a queue table's `long_running_s` wins for its queue)."""

    def __post_init__(self) -> None:
        # at least one bucket of the recent counts; at most the 15 minutes of failed jobs and downstream minutes read
        if not 10 <= self.rate_window_s <= 900:
            raise ValueError(f"MA_TOP_RATE_WINDOW_S={self.rate_window_s:g} is not between 10 and 900 seconds")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Thresholds:
        """ValueError naming the variable when one is malformed."""
        values: dict[str, float] = {}
        for f in fields(cls):
            name = f"MA_TOP_{f.name.upper()}"
            if name in env:
                try:
                    values[f.name] = int(env[name]) if f.type == "int" else float(env[name])
                except ValueError:
                    raise ValueError(f"{name}={env[name]!r} is not a number") from None
        return cls(**values)  # type: ignore[arg-type]


def clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def age(seconds: float) -> str:
    """42s, 3m, 3m05s, 1h, 1h05m: a duration an on-call engineer reads at a glance, never rounded up."""
    s = int(max(0.0, seconds))
    for big, small, size in (("h", "m", 3600), ("m", "s", 60)):
        if s >= size:
            rest = s % size // (60 if big == "h" else 1)
            return f"{s // size}{big}" + (f"{rest:02d}{small}" if rest else "")
    return f"{s}s"
