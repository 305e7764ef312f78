"""supervisord as production runs it (the repository's supervisord.conf, unchanged) on a test 'host'."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from devstack import engines
from pool.supervise import supervisord_env
from tests.support.paths import BIN, ROOT
from tests.support.processes import pool_env
from tests.support.waits import poll


class Supervisord:
    """`supervisord -n` over a copy of supervisord.conf in `home` (its socket and logs under home/var)."""

    def __init__(self, home: Path, env: dict[str, str], extra_conf: str = "") -> None:
        """`extra_conf`: sections appended to the copy (e.g. an `[inet_http_server]`)."""
        self.home = home
        self.conf = home / "supervisord.conf"
        shutil.copy(ROOT / "supervisord.conf", self.conf)
        if extra_conf:
            with self.conf.open("a") as f:
                f.write("\n" + extra_conf)
        (home / "var" / "log").mkdir(parents=True)
        self.proc = subprocess.Popen(
            [str(BIN / "supervisord"), "-n", "-c", str(self.conf)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def rpc(self) -> Any:
        """A fresh proxy each time: SupervisorTransport's connection is stuck after one failed request."""
        transport = SupervisorTransport(None, None, f"unix://{self.home}/var/supervisor.sock")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def processes(self) -> list[dict[str, Any]]:
        return self.rpc.supervisor.getAllProcessInfo()

    def pid(self, full_name: str) -> int | None:
        """The pid of `group:name` while it is RUNNING, else None."""
        for p in self.processes():
            if f"{p['group']}:{p['name']}" == full_name and p["statename"] == "RUNNING":
                return p["pid"]
        return None

    def all_running(self) -> bool:
        try:
            infos = self.processes()
        except (OSError, xmlrpc.client.Fault):
            return False
        return bool(infos) and all(p["statename"] == "RUNNING" for p in infos)

    def wait_all_running(self, timeout: float = 30) -> None:
        poll(
            self.all_running, timeout=timeout, every=0.3, what="supervisord bringing every program to RUNNING"
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(60)


def host(home: Path, db_urls: Any, **env: str) -> Iterator[tuple[Supervisord, engines.Engine]]:
    """A 'host': its own Valkey (tests stop and start it) and supervisord.conf, every program RUNNING."""
    valkey = engines.valkey(home / "valkey-data").start()
    sup = Supervisord(
        home, supervisord_env(pool_env(valkey.url, db_urls, MA_EXPORTER_PORT=str(engines.free_port()), **env))
    )
    try:
        sup.wait_all_running(timeout=30)
    except BaseException:
        sup.stop()
        valkey.stop()
        raise
    yield sup, valkey
    sup.stop()
    valkey.stop()
