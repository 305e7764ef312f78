"""View 4: Redis' health: memory, clients, ops/s, evictions; red where a finding is about Redis (its memory above
the threshold, a policy other than noeviction), so this view and the findings never disagree."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from pool.monitor.snapshot import Snapshot
from tui.screens.base import Base


class RedisScreen(Base):
    BINDINGS = [Binding("escape", "app.show_view('queues')", "back")]

    def body(self) -> ComposeResult:
        yield Static("", id="redis")

    def render_snapshot(self, snapshot: Snapshot) -> None:
        super().render_snapshot(snapshot)
        r = snapshot.redis
        kinds = {f.kind for f in self.matop.state.findings if f.subject == "redis"}
        policy = (
            f"[red]{r.policy} — BullMQ needs noeviction[/red]" if "eviction-policy" in kinds else r.policy
        )
        maxmem = f"{r.maxmemory / 2**20:.0f} MiB" if r.maxmemory else "no limit"
        memory = f"memory {r.used_memory / 2**20:.1f} MiB / {maxmem}"
        if kinds & {"redis-memory", "redis-full"}:
            memory = f"[red]{memory}[/red]"
        self.query_one("#redis", Static).update(
            f"up: {r.up}  {r.error}\nversion {r.version}\n{memory}\n"
            f"clients {r.clients}   ops/s {r.ops_per_sec}   evicted keys {r.evicted_keys}\n"
            f"maxmemory-policy {policy}\nconnection failures seen by the pool: {r.connection_failures}"
        )
