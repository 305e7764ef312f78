"""Redis full: at `maxmemory` under `noeviction`, every write that may grow memory (a job's add, fetch and
completion, the pool's heartbeats, counters and events) is answered with an OOM error, while reads and deletes
still work. A slot keeps running and retries; what it says about it is coalesced so the log stays readable: one
line when the first write is refused, one per `LOG_EVERY` while it lasts (counting the refusals in between), one
when a write is accepted again, and then an event on ma:events (it could not be written before)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from redis.exceptions import OutOfMemoryError

FULL_LINE = "Redis is full: writes refused (OOM)"
LOG_EVERY = 60.0
"""Seconds between the lines that count refused writes while Redis stays full."""


def is_oom(error: BaseException) -> bool:
    """An OOM refusal: redis-py's own error, or one raised from inside a Lua script (bullmq's) with Redis' text."""
    return isinstance(error, OutOfMemoryError) or str(error).lstrip("-").startswith("OOM ")


@dataclass(frozen=True)
class Episode:
    since: float
    """Epoch seconds of the first refused write."""
    seconds: float
    refused: int


@dataclass
class FullRedis:
    """One process's account of a full Redis: refusals from its telemetry and its bullmq worker alike."""

    log: logging.Logger
    since: float | None = None
    refused: int = 0
    _started: float = 0.0
    _unlogged: int = 0
    _logged_at: float = 0.0

    def refused_write(self, what: str, error: BaseException) -> None:
        now = time.monotonic()
        self.refused += 1
        if self.since is None:
            self.since, self._started, self._logged_at = time.time(), now, now
            self.log.error(
                "%s (%s: %s); slots keep running and retry, queued jobs stay queued; "
                "free memory or raise maxmemory",
                FULL_LINE,
                what,
                error,
            )
            return
        self._unlogged += 1
        if now - self._logged_at >= LOG_EVERY:
            self.log.error(
                "Redis still full: %d more writes refused (OOM) in the last %.0fs",
                self._unlogged,
                now - self._logged_at,
            )
            self._unlogged, self._logged_at = 0, now

    def accepted(self) -> Episode | None:
        """A write went through: the episode it ends, if there was one (logged here)."""
        if self.since is None:
            return None
        episode = Episode(self.since, time.monotonic() - self._started, self.refused)
        self.log.warning(
            "Redis accepted writes again after %.1fs full (%d writes refused)",
            episode.seconds,
            episode.refused,
        )
        self.since, self.refused, self._unlogged = None, 0, 0
        return episode
