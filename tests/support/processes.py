"""Pool processes as the tests start them: the environment a process gets, and `ma-worker run` as a child."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from devstack import databases
from tests.support.paths import BIN, ROOT

SERVICE_KEY = "test-service-role-key-very-secret"
"""The service role key every pool and the identity double share (it must never reach a log)."""


def pool_env(redis_url: str, urls: databases.DatabaseUrls, **extra: str) -> dict[str, str]:
    """The environment a pool process gets: runbook variables plus the test queue table."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MA_", "SUPERVISOR_"))}
    env.update(
        REDIS_URL=redis_url,
        DATABASE_URL=urls.identity_ro,
        TASKS_DATABASE_URL=urls.tasks,
        IDENTITY_BASE_URL="http://127.0.0.1:9",
        SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY,
        MA_QUEUE_TABLE="tests.support.table:QUEUES",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class PoolProcess:
    """`ma-worker run QUEUE` as a real child process, its output kept for assertions."""

    def __init__(self, queue: str, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.out = open(log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(BIN / "ma-worker"), "run", queue],
            env=env,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()
        return self.proc.returncode
