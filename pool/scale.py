"""`ma-worker scale [QUEUE N]`: one queue's process count in a running supervisord, nothing else restarted.

supervisord expands `numprocs=%(ENV_MA_PROCS_…)s` from its own environment, read once when it started: exporting
a new MA_PROCS_* in a shell and running `supervisorctl reread/update` changes nothing. What supervisord does
re-read is its config files. So `scale` writes `var/scale.d/<queue>.conf` beside supervisord.conf (its
`[include]` reads that directory; a later section of the same name overrides `numprocs`), asks supervisord to
re-read its config, and replaces that one process group as `supervisorctl update <queue>` would: stop it (each
slot takes no new job and finishes its in-flight ones, up to MA_SHUTDOWN_GRACE, under supervisord's
stopwaitsecs), remove it, add it back with the new count (autostart). No other program is touched, even when the
config has other pending changes. The override file outlives a supervisord restart; delete it to go back to the
MA_PROCS_* value.
"""

from __future__ import annotations

import os
import xmlrpc.client
from collections import Counter
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from pool.enqueue import CliError
from pool.queue_table import QueueSpec

MAX_PROCS = 64


def override_path(config: Path, queue: str) -> Path:
    return config.resolve().parent / "var" / "scale.d" / f"{queue}.conf"


def _rpc(config: Path, url: str | None) -> Any:
    """A fresh proxy per call (SupervisorTransport keeps a dead connection after one failure)."""
    url = url or f"unix://{config.resolve().parent / 'var' / 'supervisor.sock'}"
    if url.startswith("unix://"):
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=SupervisorTransport(None, None, url))
    return xmlrpc.client.ServerProxy(url.rstrip("/") + "/RPC2")


def _call(config: Path, url: str | None, method: str, *args: Any) -> Any:
    try:
        return getattr(_rpc(config, url).supervisor, method)(*args)
    except xmlrpc.client.Fault as fault:
        raise CliError(f"supervisord refused {method}: {fault.faultString}") from None
    except OSError as error:
        raise CliError(f"supervisord not reachable for {config} ({error}); is it running?") from None


def counts(config: Path, url: str | None) -> tuple[Counter[str], Counter[str]]:
    """(processes, RUNNING processes) per group."""
    infos = _call(config, url, "getAllProcessInfo")
    total = Counter(p["group"] for p in infos)
    running = Counter(p["group"] for p in infos if p["statename"] == "RUNNING")
    return total, running


def listing(config: Path, url: str | None, table: dict[str, QueueSpec]) -> str:
    total, running = counts(config, url)
    rows = [f"{'queue':<24} {'processes':>9} {'running':>7}  set by"]
    for name, spec in table.items():
        override = override_path(config, name)
        source = str(override.relative_to(config.resolve().parent)) if override.exists() else spec.procs_env
        rows.append(f"{name:<24} {total[name]:>9} {running[name]:>7}  {source}")
    return "\n".join(rows)


def scale(config: Path, url: str | None, table: dict[str, QueueSpec], queue: str, n: int) -> str:
    if queue not in table:
        raise CliError(f"unknown queue {queue!r}; known queues: {', '.join(table)}")
    if not 1 <= n <= MAX_PROCS:
        raise CliError(
            f"N must be 1..{MAX_PROCS} (to stop a queue: supervisorctl -c {config} stop '{queue}:*')"
        )
    if "[include]" not in config.read_text():
        raise CliError(f"{config} has no [include] of var/scale.d/*.conf; add the repository's section")
    before, _ = counts(config, url)
    path = override_path(config, queue)
    previous = path.read_text() if path.exists() else None
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_suffix(".tmp")
    staged.write_text(
        f"; written by `ma-worker scale {queue} {n}`; delete to go back to the MA_PROCS_* value\n"
        f"[program:{queue}]\nnumprocs={n}\n"
    )
    os.replace(staged, path)
    try:
        added, changed, _removed = _call(config, url, "reloadConfig")[0]
    except CliError:
        if previous is None:
            path.unlink()
        else:
            path.write_text(previous)
        raise
    if queue not in changed and queue not in added:
        return f"{queue}: already {before[queue]} process(es); nothing restarted"
    if before[queue]:
        _call(config, url, "stopProcessGroup", queue, True)  # in-flight jobs finish first
        _call(config, url, "removeProcessGroup", queue)
    _call(config, url, "addProcessGroup", queue)
    return (
        f"{queue}: {before[queue]} -> {n} process(es) (its slots replaced; in-flight jobs finished first; "
        f"no other program restarted); set in {path}"
    )
