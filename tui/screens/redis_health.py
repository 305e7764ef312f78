"""View 4: Redis' health: memory, clients, ops/s, evictions, and a warning unless the policy is noeviction."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from pool.monitor.collector import Snapshot
from tui.screens.base import Base


class RedisScreen(Base):
    BINDINGS = [Binding("escape", "app.show_view('queues')", "back")]

    def body(self) -> ComposeResult:
        yield Static("", id="redis")

    def render_snapshot(self, snapshot: Snapshot) -> None:
        super().render_snapshot(snapshot)
        r = snapshot.redis
        policy = r.policy if r.policy == "noeviction" else f"[red]{r.policy} — BullMQ needs noeviction[/red]"
        maxmem = f"{r.maxmemory / 2**20:.0f} MiB" if r.maxmemory else "no limit"
        self.query_one("#redis", Static).update(
            f"up: {r.up}  {r.error}\nversion {r.version}\nmemory {r.used_memory / 2**20:.1f} MiB / {maxmem}\n"
            f"clients {r.clients}   ops/s {r.ops_per_sec}   evicted keys {r.evicted_keys}\n"
            f"maxmemory-policy {policy}\nconnection failures seen by the pool: {r.connection_failures}"
        )
