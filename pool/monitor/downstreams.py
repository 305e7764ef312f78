"""What the pool's requests to each downstream (identity, Supabase, Stripe, PostgreSQL) came to, per outcome:
the lifetime counts (the exporter's counter) and the counts of each of the last minutes, which the pool writes
by the minute they happened in (`pool/downstream.py`). So one snapshot, even `ma-top --once`, says what the
last minutes held, without a history of earlier reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pool.contracts import DOWNSTREAM_FAILURES


@dataclass(frozen=True)
class Window:
    counts: Mapping[str, int]
    """outcome -> requests within the window."""
    span_s: float
    """What the window really spans: from the start of its oldest minute to the read (minutes are whole)."""

    @property
    def failures(self) -> int:
        return sum(self.counts.get(o, 0) for o in DOWNSTREAM_FAILURES)

    def per_min(self, n: int) -> float:
        return n / max(self.span_s, 60.0) * 60


@dataclass(frozen=True)
class DownstreamStats:
    name: str
    totals: Mapping[str, int]
    """outcome -> requests since the counters began (`ma:stats:downstream:<name>`)."""
    minutes: Mapping[int, Mapping[str, int]] = field(default_factory=dict)
    """epoch minute -> outcome -> requests in that minute (the last few minutes)."""
    read_at: float = 0.0
    """Epoch seconds (Redis' clock) the counts were read at."""

    def window(self, seconds: float) -> Window:
        """The requests of the minutes that overlap the last `seconds` before the read."""
        first = int((self.read_at - seconds) // 60)
        counts: dict[str, int] = {}
        for minute, outcomes in self.minutes.items():
            if first <= minute <= self.read_at // 60:
                for outcome, n in outcomes.items():
                    counts[outcome] = counts.get(outcome, 0) + n
        return Window(counts, self.read_at - first * 60)


def parse(name: str, totals: Mapping[str, str], fields: Mapping[str, str], read_at: float) -> DownstreamStats:
    """From HGETALL of `ma:stats:downstream:<name>` and of `ma:downstream:<name>` (`<outcome>:<minute>`)."""
    minutes: dict[int, dict[str, int]] = {}
    for key, value in fields.items():
        outcome, _, minute = key.rpartition(":")
        try:
            minutes.setdefault(int(minute), {})[outcome] = int(value)
        except ValueError:
            continue  # not one of ours: ignore rather than hide the rest
    return DownstreamStats(name, {k: _int(v) for k, v in totals.items()}, minutes, read_at)


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0
