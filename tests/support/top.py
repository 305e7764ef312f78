"""Reading ma-top as an on-call engineer does: the rows of the table on screen (under Pilot), and
`ma-top --once [--json]` run as its own process, with its findings by kind and subject."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from textual.widgets import DataTable

from tests.support.paths import BIN


def rows(app: Any) -> list[list[str]]:
    """The cells of the table on the screen on top, as text."""
    table: DataTable[Any] = app.screen.query_one(DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def once(redis_url: str, cwd: Path, *, as_json: bool = True, supervisor: str = "", **env: str) -> Any:
    """`ma-top --once [--json]`, run where no supervisord socket is: process info only from `supervisor`;
    `env`: MA_TOP_* thresholds. Fails the test unless it exits 0 (Redis answered)."""
    out = subprocess.run(
        [
            str(BIN / "ma-top"),
            "--once",
            *(["--json"] if as_json else []),
            *(["--supervisor", supervisor] if supervisor else []),
            "--redis-url",
            redis_url,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
        env={**os.environ, **env},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if as_json else out.stdout


def about(snapshot: dict[str, Any], kind: str, subject: str) -> list[dict[str, str]]:
    """The findings of one kind about one subject in `ma-top --once --json`'s output."""
    return [f for f in snapshot["findings"] if f["kind"] == kind and f["subject"] == subject]


@contextlib.asynccontextmanager
async def first_screen(redis: Any, tmp_path: Path, **thresholds: Any) -> AsyncIterator[Any]:
    """ma-top itself, headless under Pilot over the live data source, on its first screen (the queues view);
    `thresholds`: Thresholds fields (e.g. rate_window_s=20). Read it with `badge` and `pane`."""
    from pool.monitor.findings import Thresholds
    from tui.app import MaTop

    app = MaTop(
        redis, [], refresh_s=0.3, journal_path=tmp_path / "audit.log", thresholds=Thresholds(**thresholds)
    )
    async with asyncio.timeout(300), app.run_test(size=(160, 48)):
        yield app


def badge(app: Any, queue: str) -> str:
    """The alerts cell of `queue`'s row on the queues view ("" while the row is not shown)."""
    return next((r[-1] for r in rows(app) if r[0] == queue), "")


def pane(app: Any) -> str:
    """The findings pane under the queue table, as text."""
    from textual.widgets import Static

    return str(app.screen.query_one("#findings", Static).render())


def report(
    redis_url: str, cwd: Path, file: Path, *, supervisor: str = "", hours: float = 2, **env: str
) -> str:
    """`ma-top --report FILE --hours N` run as its own process (`env`: MA_TOP_* thresholds, secrets); fails the
    test unless it exits 0 and prints the file's path. Returns the report's text."""
    out = subprocess.run(
        [
            str(BIN / "ma-top"),
            "--report",
            str(file),
            "--hours",
            str(hours),
            *(["--supervisor", supervisor] if supervisor else []),
            "--redis-url",
            redis_url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=cwd,
        env={**os.environ, **env},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(file.resolve()), out.stdout
    return file.read_text()


def report_section(text: str, title: str) -> str:
    """One `## title` section of an incident report, up to the next section."""
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]
