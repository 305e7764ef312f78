"""Regenerate bench/REPORT.md: the chaos suite's figures and every benchmark with its budget, in one command.

    .venv/bin/python bench/report.py                 # run the chaos suite and every benchmark, then write
    .venv/bin/python bench/report.py --skip-chaos    # reuse var/chaos-results.json from the last chaos run
    .venv/bin/python bench/report.py --skip-bench    # reuse var/bench-results.json from the last benchmark run
    .venv/bin/python bench/report.py --skip-chaos --bench io_bound   # rerun one benchmark, keep the other rows

var/ is not in git: where var/bench-results.json does not hold every benchmark's results (a fresh clone),
`--skip-chaos --bench NAME` has nothing to render the other rows from, so it replaces that benchmark's rows in
the committed REPORT.md and leaves the rest of the file as it was.

Each benchmark prints its figures as one JSON line last; ratios are measured against a reference in the same
run (these machines are noisy), so compare ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report_rows import bench_rows

ROOT = Path(__file__).resolve().parent.parent
PY = Path(sys.executable)
CHAOS = ROOT / "var" / "chaos-results.json"
BENCH = ROOT / "var" / "bench-results.json"
REPORT = ROOT / "bench" / "REPORT.md"

BENCHMARKS: list[tuple[str, list[str]]] = [
    ("throughput", ["bench/throughput.py"]),
    ("top_tick", ["bench/top_tick.py"]),
    ("export", ["bench/export.py"]),
    ("export_s3", ["bench/export_s3.py"]),
    ("search_scan", ["bench/search_scan.py"]),
    ("usage_rollup", ["bench/usage_rollup.py"]),
    ("node_compare", ["bench/node_compare.py"]),
    ("io_bound", ["bench/io_bound.py"]),
    ("task_mix", ["bench/task_mix.py"]),
    ("capacity", ["bench/capacity.py"]),
    ("billing_day", ["bench/billing_day.py", "--profile"]),
    ("payment_sync_soak", ["bench/payment_sync_soak.py"]),
]
SOAK = ("soak", ["bench/soak.py"])
"""Long (1,000,000 jobs by default): run only with --soak."""


def run_chaos() -> int:
    """The whole chaos suite, outages included, one stack per test module: every scenario but the outages under the
    background load (MA_CHAOS_LOAD_RATE, default 60 jobs/s; CI runs it with 0). About 3 to 7 minutes a scenario
    under the load on a shared 2-core machine (900 s each at most), 8 minutes each outage (1,500 s at most): about
    an hour."""
    CHAOS.unlink(missing_ok=True)
    return subprocess.run(
        [
            str(PY),
            "-m",
            "pytest",
            "-m",
            "chaos",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_chaos.py",
            "tests/test_chaos_outages.py",
            "tests/test_chaos_fuzz.py",
        ],
        cwd=ROOT,
        check=False,
    ).returncode


def run_benchmarks(only: list[str] | None = None) -> dict[str, Any]:
    results: dict[str, Any] = json.loads(BENCH.read_text()) if only and BENCH.exists() else {}
    for name, argv in BENCHMARKS:
        if only and name not in only:
            continue
        started = time.monotonic()
        out = subprocess.run([str(PY), *argv], cwd=ROOT, capture_output=True, text=True, check=False)
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        try:
            results[name] = {
                **json.loads(lines[-1]),
                "exit": out.returncode,
                "seconds": round(time.monotonic() - started),
            }
        except (IndexError, ValueError):
            results[name] = {"error": (out.stderr or out.stdout)[-500:], "exit": out.returncode}
        print(f"{name}: exit {out.returncode}", file=sys.stderr)
    BENCH.parent.mkdir(parents=True, exist_ok=True)
    BENCH.write_text(json.dumps(results, indent=2))
    return results


def chaos_load_table(chaos: dict[str, Any]) -> list[str]:
    """Issue 17: each scenario's background load (every job name at MA_CHAOS_LOAD_RATE jobs/s)."""
    rows = [c for c in chaos.values() if "bg_rate" in c]
    if not rows:
        return []
    out = [
        "Every scenario runs under a steady background load of every job name (Node BullMQ producer) at "
        f"{rows[0]['bg_rate']} jobs/s (`MA_CHAOS_LOAD_RATE`; at least half the capacity below). Its jobs must all "
        "complete too. Pickup = when a job's first attempt started minus when it was due, p99 of the jobs that "
        "ran once (retried: counted apart), by when they were picked up: before, during and after the fault; "
        "drain = seconds from the fault's end until the backlog is back within a second of arrivals of its level "
        "before the fault, while the load still arrives (it is stopped then, or after the limit: 'not within'). "
        "Done/s before = background jobs completed per second before the fault: below the rate, the machine "
        "(shared cores) did not keep up even without a fault. The 5-minute outages run without this load.",
        "",
        "| scenario | background jobs | lost | failed | retried | done/s before | pickup p99 before s | during s "
        "| after s | backlog before | backlog peak | drain s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def f(value: Any) -> str:
        return "-" if value is None else str(value)

    def drain(c: dict[str, Any]) -> str:
        if c["drain_s"] is None and c.get("drain_limit_s"):
            return f"not within {c['drain_limit_s']:.0f}"
        return f(c["drain_s"])

    for c in rows:
        out.append(
            f"| {c['scenario']} | {c['bg_jobs']} | {c['bg_lost']} | {c['bg_failed']} | {f(c.get('bg_retried'))} | "
            f"{f(c.get('bg_done_per_s_before'))} | {f(c['pickup_p99_before_s'])} | {f(c['pickup_p99_during_s'])} | "
            f"{f(c['pickup_p99_after_s'])} | {f(c['backlog_before'])} | {f(c['backlog_peak'])} | {drain(c)} |"
        )
    return [*out, ""]


def render(chaos: dict[str, Any], bench: dict[str, Any]) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# ma-worker: chaos and performance report",
        "",
        f"Generated {now} by `.venv/bin/python bench/report.py` on {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.machine()}. Ratios are against a reference measured in the "
        "same run (this machine is noisy); absolute figures are for orientation only.",
        "",
        "## Chaos suite (`pytest -m chaos`)",
        "",
        "Full stack under supervisord (real queue table, short locks), a Node BullMQ producer adding a mixed load "
        "at a steady rate plus jobs through `ma-worker enqueue`, one fault per scenario, then invariants counted in "
        "the databases and at the doubles. Budgets: lost 0, duplicated 0, FATAL 0, secrets in logs 0, processing "
        "resumes within 30 s of Redis or PostgreSQL coming back.",
        "",
        "| scenario | jobs in | completed | failed (with reason) | lost | duplicated | missing effects | FATAL | "
        "secrets in logs | recovery s | elapsed s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    totals = dict.fromkeys(
        (
            "jobs_in",
            "completed",
            "failed_with_reason",
            "lost",
            "duplicated",
            "missing_effects",
            "fatal",
            "secrets_in_logs",
        ),
        0,
    )
    for name, c in chaos.items():
        rec = "-" if c.get("recovery_s") is None else f"{c['recovery_s']:.1f}"
        out.append(
            f"| {name} | {c['jobs_in']} | {c['completed']} | {c['failed_with_reason']} | {c['lost']} | "
            f"{c['duplicated']} | {c['missing_effects']} | {c['fatal']} | {c['secrets_in_logs']} | {rec} | "
            f"{c['elapsed_s']} |"
        )
        for key in totals:
            totals[key] += int(c.get(key) or 0)
    if chaos:
        out.append(
            f"| **all scenarios** | {totals['jobs_in']} | {totals['completed']} | {totals['failed_with_reason']} "
            f"| {totals['lost']} | {totals['duplicated']} | {totals['missing_effects']} | {totals['fatal']} | "
            f"{totals['secrets_in_logs']} | | |"
        )
    else:
        out.append("| (no chaos results: run without --skip-chaos) | | | | | | | | | | |")
    out += [
        "",
        "Failed jobs in the fuzz scenario are the fuzzed payloads themselves (invalid fields, unknown names, "
        "non-JSON data): each failed at once with a reason naming the field.",
        "",
        *chaos_load_table(chaos),
    ]
    out += [
        "## Benchmarks",
        "",
        "| issue | benchmark | measured | budget | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    out += [f"| {i} | {n} | {m} | {b} | {v} |" for i, n, m, b, v in bench_rows(bench)]
    out += [
        "",
        "Run one alone: `.venv/bin/python bench/<name>.py` (each prints its own figures and exits 1 when over "
        "budget).",
        "",
    ]
    return "\n".join(out)


RERUN = "Rerun alone since (`--bench`, the other rows as generated above): "


def splice(report: str, bench: dict[str, Any], names: list[str]) -> str:
    """`report` with the rows of the benchmarks in `bench` replaced by new ones (a row is known by its issue and
    benchmark cells; a new row with no old one goes after the table's last row), and a line saying which
    benchmarks were rerun when."""
    lines = report.splitlines()
    unmeasured = set(bench_rows({}))  # the placeholder rows of benchmarks without results
    rows = {
        (i, n): f"| {i} | {n} | {m} | {b} | {v} |"
        for i, n, m, b, v in bench_rows(bench)
        if (i, n, m, b, v) not in unmeasured
    }
    table = [at for at, line in enumerate(lines) if line.startswith("| #")]
    for at in table:
        cells = [cell.strip() for cell in lines[at].split("|")[1:3]]
        if (key := (cells[0], cells[1])) in rows:
            lines[at] = rows.pop(key)
    last = table[-1] if table else len(lines) - 1
    lines[last + 1 : last + 1] = list(rows.values())
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    note = next((at for at, line in enumerate(lines) if line.startswith(RERUN)), None)
    if note is None:
        generated = next(at for at, line in enumerate(lines) if line.startswith("Generated "))
        lines[generated + 1 : generated + 1] = ["", RERUN]
        note = generated + 2
    earlier = [
        part
        for part in lines[note][len(RERUN) :].rstrip(".").split(", ")
        if part and part.split()[0] not in names
    ]
    lines[note] = RERUN + ", ".join([*earlier, *(f"{name} {now}" for name in names)]) + "."
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--skip-chaos", action="store_true")
    parser.add_argument("--skip-bench", action="store_true")
    parser.add_argument(
        "--bench",
        action="append",
        choices=[name for name, _ in [*BENCHMARKS, SOAK]],
        help="run only this benchmark (repeatable); the others keep their last results",
    )
    parser.add_argument("--soak", action="store_true", help="also run the soak (bench/soak.py; takes hours)")
    args = parser.parse_args()
    if args.soak or "soak" in (args.bench or []):
        BENCHMARKS.append(SOAK)
    chaos_rc = 0 if args.skip_chaos else run_chaos()
    if args.skip_bench:
        bench = json.loads(BENCH.read_text()) if BENCH.exists() else {}
    else:
        bench = run_benchmarks(args.bench)
    if (
        args.bench
        and args.skip_chaos
        and REPORT.exists()
        and any(name not in bench for name, _ in BENCHMARKS)
    ):
        # Not every benchmark's results on this machine (var/ is not in git): replace only the rows rerun.
        REPORT.write_text(splice(REPORT.read_text(), bench, args.bench))
        print(f"wrote {REPORT.relative_to(ROOT)} (the rows of {', '.join(args.bench)} replaced)")
        return 0
    chaos = json.loads(CHAOS.read_text()) if CHAOS.exists() else {}
    REPORT.write_text(render(chaos, bench))
    print(f"wrote {REPORT.relative_to(ROOT)}")
    return chaos_rc


if __name__ == "__main__":
    sys.exit(main())
