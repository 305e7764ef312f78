"""bench/report.py's splice: one benchmark rerun on a fresh clone replaces its own rows in the committed REPORT.md
and leaves every other line as it was (var/bench-results.json, which the full render needs, is not in git)."""

from __future__ import annotations

from pathlib import Path

from bench.report import RERUN, splice

REPORT = (Path(__file__).resolve().parent.parent / "bench" / "REPORT.md").read_text()
TOP_TICK = {"top_tick": {"ratio": 0.5, "full_median_ms": 1.25, "top_cpu_fraction": 0.02}}


NEW_TICK = "| #6 | ma-top tick, 1,000,000-job queue vs empty | 0.500x (1.25 ms) | <= 1.2x, <= 5 ms | within |"
NEW_CPU = "| #6 | ma-top CPU at a 1 s refresh | 2.0 % of a core | <= 5 % | within |"


def _content(lines: list[str]) -> list[str]:
    """The report's lines but blank ones and the rerun note (which `splice` adds or extends)."""
    return [line for line in lines if line.strip() and not line.startswith(RERUN)]


def test_rerun_rows_replace_their_own_and_nothing_else() -> None:
    after = splice(REPORT, TOP_TICK, ["top_tick"]).splitlines()

    expected = [
        NEW_TICK
        if line.startswith("| #6 | ma-top tick")
        else NEW_CPU
        if line.startswith("| #6 | ma-top CPU")
        else line
        for line in _content(REPORT.splitlines())
    ]
    assert NEW_TICK in expected and NEW_CPU in expected  # the committed report has both rows
    # Every other line as it was; the rows of benchmarks not rerun ("not measured" placeholders included) are
    # neither touched nor added.
    assert _content(after) == expected
    (note,) = [line for line in after if line.startswith(RERUN)]
    assert "top_tick" in note


def test_the_rerun_line_keeps_one_entry_per_benchmark() -> None:
    once = splice(REPORT, TOP_TICK, ["top_tick"])
    twice = splice(once, TOP_TICK, ["top_tick"])
    lines = [line for line in twice.splitlines() if line.startswith(RERUN)]
    assert len(lines) == 1
    assert lines[0].count("top_tick") == 1
    other = splice(twice, {}, ["io_bound"])
    (line,) = [line for line in other.splitlines() if line.startswith(RERUN)]
    assert "top_tick" in line and "io_bound" in line
