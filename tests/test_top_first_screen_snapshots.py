"""How ma-top's first screen looks with findings, the recent events strip and the header's process count; and
with a finding selected. The setup (frozen clock, fixed snapshot, seeded Valkey) is tests/test_top_snapshots.py's.
Update deliberately with `--snapshot-update` and read the SVGs."""

from __future__ import annotations

from pool.monitor.supervisor_source import ProcessInfo
from tests.test_top_snapshots import T0, FixedSource, after, app, seeded  # noqa: F401 - fixtures used by name

SOCK = "unix:///srv/a/var/supervisor.sock"


def _processes() -> tuple[ProcessInfo, ...]:
    start = int(T0) - 7200
    return (
        ProcessInfo(
            SOCK, "billing-usage", "billing-usage_00", "RUNNING", 999_991, start, int(T0), "pid 999991"
        ),
        ProcessInfo(
            SOCK, "billing-usage", "billing-usage_01", "FATAL", 0, start, int(T0), "Exited too quickly", 78
        ),
        ProcessInfo(
            SOCK, "identity-events", "identity-events_00", "RUNNING", 999_992, start, int(T0), "pid 1"
        ),
    )


def test_first_screen_with_findings_recent_events_and_the_process_count_looks_as_approved(
    snap_compare, app, seeded
):
    source: FixedSource = app.source
    source.shown_processes = _processes()
    assert snap_compare(app, run_before=after(), terminal_size=(120, 36))


def test_first_screen_with_a_finding_selected_looks_as_approved(snap_compare, app, seeded):
    source: FixedSource = app.source
    source.shown_processes = _processes()
    assert snap_compare(app, run_before=after("f", "down"), terminal_size=(120, 36))
