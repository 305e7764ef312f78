"""What the findings need from earlier snapshots: when Redis was last seen up or first seen down, and each
process's RSS over the last hour (pool/monitor/memory.py). Rates are not here: they come from the pool's recent
buckets in Redis (pool/monitor/recent.py), so a reader needs no history for them.

The caller keeps one `History` across its ticks (ma-top's dashboard, the exporter's sampler); `findings()`
records each snapshot in it.
"""

from __future__ import annotations

from pool.monitor.memory import MemoryHistory
from pool.monitor.snapshot import Snapshot


class History:
    def __init__(self) -> None:
        self.redis_down_since: float | None = None
        """Time of the first snapshot that found Redis down, after the last one that found it up."""
        self.redis_last_up: float | None = None
        """Time of the last snapshot that found Redis up."""
        self._last_at: float | None = None
        self.memory = MemoryHistory()
        """Each process's RSS over the last hour, from its heartbeats (the memory-growth finding's evidence)."""

    def record(self, snapshot: Snapshot) -> None:
        """Add a snapshot; the same snapshot (or an older one) twice is a no-op, so every render may call it."""
        if self._last_at is not None and snapshot.taken_at <= self._last_at:
            return
        self._last_at = snapshot.taken_at
        self.memory.record(snapshot)
        if not snapshot.redis.up or "redis" in snapshot.errors:
            if self.redis_down_since is None:
                self.redis_down_since = snapshot.taken_at
            return
        self.redis_down_since = None
        self.redis_last_up = snapshot.taken_at
