"""ma-top's incident report: the `W` key (written off the refresh path, the path notified) and
`ma-top --report FILE [--hours N]` (the path printed). Both write through pool/monitor/report.py."""

from __future__ import annotations

import sys
from pathlib import Path

from pool.monitor.findings import Thresholds
from pool.monitor.report import default_path, write_report
from pool.monitor.source import DataSource
from tui.dashboard import Dashboard


async def write_from_app(app: Dashboard, path: Path | None = None) -> Path | None:
    """Write the report with what ma-top knows beyond the source (the last answered snapshot, the restarts it
    saw) and notify its path; a failure is notified too, never raised into the app."""
    app.notify("writing the incident report…")
    try:
        written = await write_report(
            app.source,
            path or default_path(),
            thresholds=app.thresholds,
            last_snapshot=app.state.snapshot,
            restarts_seen=app.state.restarts,
        )
    except Exception as error:  # noqa: BLE001 - shown; the dashboard goes on
        app.notify_action(f"incident report not written: {type(error).__name__}: {error}")
        return None
    app.notify_action(f"incident report written: {written}")
    return written


async def report_once(source: DataSource, path: Path, hours: float, thresholds: Thresholds) -> int:
    """`ma-top --report`: write, print the path, exit 0 (Redis down included: the report says so); 1 when the
    file cannot be written."""
    try:
        written = await write_report(source, path, hours=hours, thresholds=thresholds)
    except OSError as error:
        print(f"ma-top: cannot write the report to {path}: {error}", file=sys.stderr)
        return 1
    finally:
        await source.close()
    print(written)
    return 0
