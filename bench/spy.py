"""Where a running pool process spends its CPU: py-spy samples (`--nonblocking`, so the process is never paused)
of every process of a supervisord program over one stretch, each sample put in the category of its innermost
frame that belongs to a known library or to our code.

    with Sampling(pids, out_dir, "invoices") as s: ...    # then shares(s.counts())
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import TracebackType

CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pdf (fpdf2)", ("fpdf/",)),
    ("postgres client (sqlalchemy, asyncpg)", ("sqlalchemy/", "asyncpg/")),
    ("stripe client", ("stripe/",)),
    ("http client (httpx)", ("httpx/", "httpcore/", "h11/", "anyio/")),
    ("pydantic", ("pydantic/", "pydantic_core/")),
    ("pool (bullmq, redis, dispatch, telemetry)", ("bullmq/", "redis/", "hiredis", "pool/")),
    ("handlers' own code", ("handlers/",)),
)
OTHER = "event loop, stdlib, other"


def executable() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def category(stack: str) -> str:
    for frame in reversed(stack.split(";")):
        for name, marks in CATEGORIES:
            if any(mark in frame for mark in marks):
                return name
    return OTHER


class Sampling:
    """py-spy recording each pid until the block ends (SIGINT makes it write its raw, collapsed stacks)."""

    def __init__(self, pids: list[int], out_dir: Path, tag: str, rate: int = 100) -> None:
        self.files = [out_dir / f"spy-{tag}-{pid}.txt" for pid in pids]
        self.pids, self.rate = pids, rate
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Sampling:
        spy = executable()
        assert spy, "py-spy is not installed (pip install py-spy)"
        for pid, out in zip(self.pids, self.files, strict=True):
            self.procs.append(
                subprocess.Popen(
                    [
                        *(spy, "record", "--pid", str(pid), "--rate", str(self.rate), "--nonblocking"),
                        *("--format", "raw", "--output", str(out)),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            proc.wait(30)

    def counts(self) -> Counter[str]:
        """CPU samples per category (py-spy leaves idle samples out by default)."""
        counts: Counter[str] = Counter()
        for out in self.files:
            if not out.exists():
                continue
            for line in out.read_text().splitlines():
                stack, _, n = line.rpartition(" ")
                if n.isdigit():
                    counts[category(stack)] += int(n)
        return counts


def shares(counts: Counter[str]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: round(v / total, 3) for k, v in counts.most_common()} if total else {}
