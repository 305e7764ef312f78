"""bench/report.py's splice: one benchmark rerun on a fresh clone replaces its own rows in the committed REPORT.md
and leaves every other line as it was (var/bench-results.json, which the full render needs, is not in git)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report import RERUN, splice
from bench.report_rows import bench_rows

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


IO_BOUND = {
    "concurrency": 50,
    "ratio_vs_bound": 0.872,
    "pool_jobs_per_s": 2181,
    "bound_jobs_per_s": 2500,
    "bare_vs_bound": 0.964,
    "node_vs_bound": 0.839,
    "pooled_vs_bound": 0.869,
    "budget": 0.9,
}
LANE = {"await_ms": 20.67, "completion_to_next_start_ms": 3.29, "end_to_completion_ms": 0.05}
BURSTS = {"valkey_script_us": 116.9, "valkey_queue_ms": 1.29, "worker_cpu_us": 134.0, "worker_queue_ms": 1.47}


def _io_row(figures: dict[str, Any]) -> str:
    (row,) = [row for row in bench_rows({"io_bound": figures}) if "I/O-bound" in row[1]]
    assert row[4] == "**OVER**"  # 0.872 against 0.9
    return row[2]


def test_io_bound_rows_render_results_from_before_and_after_the_burst_figures() -> None:
    older = _io_row({**IO_BOUND, "cycle_ms": LANE})  # a var/bench-results.json written before them
    assert "completing call to the next job's start 3.29 ms" in older
    assert "bursts" not in older and "whole ms" not in older

    newer = _io_row(
        {
            **IO_BOUND,
            "cycle_ms": {**LANE, "lanes_per_burst": 21.0, **BURSTS},
            "spread_ms": [18, 22],
            "spread_vs_bound": 0.953,
            "spread_cycle_ms": {**LANE, "lanes_per_burst": 3.4, **BURSTS},
        }
    )
    assert "lanes start in bursts of 21.0 on average" in newer
    assert "about 1.29 ms for Valkey to run its own script and those of the lanes ahead" in newer
    assert "(116.9 us of scripts a job in that round) and about 1.47 ms for the worker's CPU" in newer
    assert "awaits of 18-22 ms (whole ms, uniform; against C / their mean) instead: 0.953x" in newer
    assert "lanes in bursts of 3.4" in newer
