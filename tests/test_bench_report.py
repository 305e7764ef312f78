"""bench/report.py's splice: one benchmark rerun on a fresh clone replaces its own rows in the committed REPORT.md
and leaves every other line as it was (var/bench-results.json, which the full render needs, is not in git)."""

from __future__ import annotations

from pathlib import Path

from bench.report import RERUN, splice

REPORT = (Path(__file__).resolve().parent.parent / "bench" / "REPORT.md").read_text()
TOP_TICK = {"top_tick": {"ratio": 0.5, "full_median_ms": 1.25, "top_cpu_fraction": 0.02}}


def test_rerun_rows_replace_their_own_and_nothing_else() -> None:
    before = REPORT.splitlines()
    after = splice(REPORT, TOP_TICK, ["top_tick"]).splitlines()

    assert (
        "| #6 | ma-top tick, 1,000,000-job queue vs empty | 0.500x (1.25 ms) | <= 1.2x, <= 5 ms | within |"
        in after
    )
    assert "| #6 | ma-top CPU at a 1 s refresh | 2.0 % of a core | <= 5 % | within |" in after
    changed = [line for line in after if line not in before]
    assert len(changed) == 3, changed  # the two rows and the rerun line
    assert [line for line in before if line not in after] == [
        line for line in before if line.startswith(("| #6 | ma-top tick", "| #6 | ma-top CPU"))
    ]
    # The rows of benchmarks not rerun, "not measured" placeholders included, are not touched or added.
    assert len(after) == len(before) + 2  # the rerun line and a blank one before it
    assert not any("not measured" in line for line in after if line not in before)


def test_the_rerun_line_keeps_one_entry_per_benchmark() -> None:
    once = splice(REPORT, TOP_TICK, ["top_tick"])
    twice = splice(once, TOP_TICK, ["top_tick"])
    lines = [line for line in twice.splitlines() if line.startswith(RERUN)]
    assert len(lines) == 1
    assert lines[0].count("top_tick") == 1
    other = splice(twice, {}, ["io_bound"])
    (line,) = [line for line in other.splitlines() if line.startswith(RERUN)]
    assert "top_tick" in line and "io_bound" in line
