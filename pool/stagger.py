"""`--stagger DURATION`: spread a batch of jobs over a duration as delayed jobs, and say when each will run.

The runbook's remedy for throttle log spam is to "stagger backfill jobs": instead of every period of a backfill
landing in `wait` at once (and all of them meeting identity's rate limit together), job i of n is added with
BullMQ's `delay` of i/n of the duration, so the first runs now and the rest follow evenly. Job ids are not
touched, so a rerun still finds the same ids and adds nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pytimeparse import parse as parse_timespan  # maintained, handles 90s / 30m / 1h30m / 1:30:00

from pool.enqueue import CliError

SHOWN = 3
"""Jobs listed at each end of a dry run's schedule."""


def parse_duration(value: str) -> float:
    """`90s`, `30m`, `2h`, `1h30m`, `1:30:00` -> seconds (> 0)."""
    seconds = parse_timespan(value.strip())
    if seconds is None or seconds <= 0:
        raise CliError(f"--stagger {value!r} is not a duration (e.g. 90s, 30m, 2h, 1h30m)")
    return float(seconds)


def delays_ms(count: int, over_s: float) -> list[int]:
    """Job i of `count` waits i/count of the duration: the first at once, then evenly spaced."""
    return [round(i * over_s * 1000 / count) for i in range(count)]


def _offset(ms: int) -> str:
    return "+" + str(timedelta(seconds=round(ms / 1000)))


def describe(ids: list[str], delays: list[int], over_s: float, now: datetime | None = None) -> str:
    """The schedule a dry run prints: the spacing, then the first and last jobs with their offset and UTC time."""
    if not ids:
        return ""
    now = now or datetime.now(UTC)
    spacing = over_s / len(ids)
    rows = list(zip(ids, delays, strict=True))
    shown = rows if len(rows) <= 2 * SHOWN else [*rows[:SHOWN], None, *rows[-SHOWN:]]
    lines = [
        f"  schedule: {len(ids)} job(s) over {timedelta(seconds=round(over_s))}, one every {spacing:.1f}s"
    ]
    for row in shown:
        if row is None:
            lines.append(f"    ... {len(rows) - 2 * SHOWN} more")
            continue
        job_id, delay = row
        at = (now + timedelta(milliseconds=delay)).strftime("%Y-%m-%d %H:%M:%SZ")
        lines.append(f"    {_offset(delay):>10}  {at}  {job_id}")
    return "\n".join(lines)
