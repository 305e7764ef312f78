"""Start supervisord on supervisord.conf with the environment it expects."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pool.queue_table import QUEUES


def supervisord_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """MA_PROCS_* defaults from the queue table (exported values win) and ma-worker on PATH."""
    env = dict(os.environ if base is None else base)
    for spec in QUEUES.values():
        env.setdefault(spec.procs_env, str(spec.processes))
    bindir = str(Path(sys.executable).parent)
    if bindir not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def prepare_state_dir(config: Path) -> None:
    (config.resolve().parent / "var" / "log").mkdir(parents=True, exist_ok=True)


def exec_supervisord(config: str, extra: list[str]) -> int:  # noqa: RET503 - os.execve does not return
    path = Path(config)
    if not path.exists():
        print(f"ma-worker: no supervisord config at {path}", file=sys.stderr)
        return 2
    prepare_state_dir(path)
    binary = str(Path(sys.executable).parent / "supervisord")
    os.execve(binary, [binary, "-c", str(path), *extra], supervisord_env())
