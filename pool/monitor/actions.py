"""ma-top's actions on the system: requeue, promote, pause/resume, supervisord process control, and the
audit `Journal` every action is written to. No Textual here; the dashboard reaches these through its
`DataSource` (pool/monitor/source.py), which decides nothing about read-only mode (the app refuses first).
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from pathlib import Path
from typing import Literal

from bullmq import Queue
from redis.asyncio import Redis

from pool.contracts import AUDIT_MAXLEN, AUDIT_STREAM
from pool.monitor.bulk_actions import act
from pool.monitor.supervisor_source import supervisor_call

ProcessVerb = Literal["restart", "stop", "start"]


class Journal:
    """Who did what, when, to which jobs: the audit stream plus a local file that survives Redis."""

    def __init__(self, redis: Redis, path: Path) -> None:
        self.redis = redis
        self.path = path
        self.who = f"{getpass.getuser()}@{socket.gethostname()}"

    async def write(self, action: str, target: str, ids: list[str] | None = None, outcome: str = "") -> None:
        record = {
            "ts": str(int(time.time() * 1000)),
            "who": self.who,
            "pid": str(os.getpid()),
            "action": action,
            "target": target,
            "ids": json.dumps(ids or []),
            "outcome": outcome,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        await self.redis.xadd(AUDIT_STREAM, record, maxlen=AUDIT_MAXLEN, approximate=True)  # type: ignore[arg-type]


async def requeue(redis: Redis, queue: str, ids: list[str]) -> tuple[int, int]:
    """Requeue exactly these failed jobs (fresh attempts); ones no longer failed are skipped."""
    result = await act(redis, queue, "requeue", ids)
    return result.done, result.skipped


async def promote(redis: Redis, queue: str, ids: list[str]) -> tuple[int, int]:
    """Promote exactly these delayed jobs to wait; ones no longer delayed are skipped."""
    result = await act(redis, queue, "promote", ids)
    return result.done, result.skipped


async def set_paused(redis: Redis, queue: str, paused: bool) -> None:
    q = Queue(queue, {"connection": redis})
    await (q.pause() if paused else q.resume())


async def control_process(endpoint: str, name: str, verb: ProcessVerb) -> None:
    """Stop, start or restart (stop, then start) one supervisord process; a refusal raises RuntimeError."""
    if verb in ("stop", "restart"):
        await supervisor_call(endpoint, "stopProcess", name, True)
    if verb in ("start", "restart"):
        await supervisor_call(endpoint, "startProcess", name, True)


async def rolling_restart(endpoint: str, names: list[str]) -> list[str]:
    """Restart a program's processes one at a time, each back to RUNNING before the next stops."""
    done = []
    for name in names:
        await supervisor_call(endpoint, "stopProcess", name, True)
        await supervisor_call(endpoint, "startProcess", name, True)  # wait=True: returns once RUNNING
        info = await supervisor_call(endpoint, "getProcessInfo", name)
        if info["statename"] != "RUNNING":
            raise RuntimeError(f"{name} is {info['statename']} after restart; rolling restart stopped")
        done.append(name)
    return done
