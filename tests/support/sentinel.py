"""A Redis failover group from the embedded Valkey binary: a primary, a replica and three sentinels
(`valkey-server <conf> --sentinel`), each a process of its own on its own port, so a test can SIGKILL the primary
and watch the sentinels promote the replica."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devstack import engines

MASTER = "mymaster"


@dataclass
class Group:
    primary: engines.Engine
    replica: engines.Engine
    sentinels: list[engines.Engine]

    @property
    def hosts(self) -> str:
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    @property
    def url(self) -> str:
        return f"redis+sentinel://{self.hosts}/{MASTER}"

    def kill_primary(self) -> None:
        assert self.primary.proc is not None
        self.primary.proc.send_signal(signal.SIGKILL)
        self.primary.proc.wait()


def _sentinel(home: Path, i: int, primary_port: int) -> engines.Engine:
    port = engines.free_port()
    datadir = home / f"sentinel-{i}"
    datadir.mkdir(parents=True, exist_ok=True)
    conf = datadir / "sentinel.conf"  # sentinels rewrite their config: a file of their own, writable
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {datadir}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
        f"sentinel down-after-milliseconds {MASTER} 1000\n"
        f"sentinel failover-timeout {MASTER} 10000\n"
        f"sentinel parallel-syncs {MASTER} 1\n"
    )
    argv = [engines.valkey_binary(), str(conf), "--sentinel"]
    return engines.Engine(f"sentinel-{i}", argv, port, datadir, f"redis://127.0.0.1:{port}")


@contextlib.contextmanager
def group(home: Path) -> Iterator[Group]:
    """Start the group (the replica synced, the sentinels watching); stop every process after."""
    primary = engines.valkey(home / "primary", persistent=False)
    replica = engines.valkey(home / "replica", persistent=False)
    replica.argv += ["--replicaof", "127.0.0.1", str(primary.port)]
    started: list[engines.Engine] = []
    try:
        for engine in (primary, replica):
            started.append(engine.start())
        sentinels = [_sentinel(home, i, primary.port) for i in range(3)]
        for s in sentinels:
            started.append(s.start())
        yield Group(primary, replica, sentinels)
    finally:
        for engine in reversed(started):
            engine.stop()
