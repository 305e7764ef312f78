"""The README's runbook tables stay true: every command in them runs (`--help`) with every flag it shows, each
runbook command maps to one of ours with the runbook's flags, and every badge and finding kind they name exists."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from pool.monitor.finding import BADGES
from tests.support.paths import BIN, ROOT

README = (ROOT / "README.md").read_text()
OURS = ("ma-worker", "ma-top", "bash devstack/setup.sh")
RUNBOOK_ISSUES = (
    "Jobs stuck in `waiting`",
    "Rapid retries",
    "Memory growth",
    "Duplicate processing",
    "New product jobs missing",
    "`Billing usage aggregation throttled` log spam",
)
"""The rows of the runbook's troubleshooting table (worker-runbook.md), verbatim."""
RUNBOOK_COMMANDS = (
    "pnpm dev:worker",
    "pnpm --filter @ma/worker billing:backfill",
    "pnpm --filter @ma/worker billing:load-test",
    "pnpm --filter @ma/worker enqueue",
    "TokenService.rotateSession",
)


def table(heading: str) -> list[list[str]]:
    """The rows (cells, stripped) of the first table under `### heading`."""
    section = README.split(f"\n### {heading}\n", 1)[1]
    lines = [ln for ln in section.split("\n\n", 3)[:3] if ln.lstrip().startswith("|")]
    assert lines, f"no table under ### {heading}"
    rows = [ln for ln in lines[0].splitlines() if ln.startswith("|")][2:]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]


def code(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def flags(command: str) -> set[str]:
    return {
        t.split("=")[0] for t in shlex.split(command.replace("[", " ").replace("]", " ")) if t.startswith("-")
    }


def ours(command: str) -> bool:
    return command.startswith(OURS)


COMMANDS = table("Commands")
TROUBLE = table("Troubleshooting")
EVERY_COMMAND = sorted(
    {c for row in COMMANDS for c in code(row[1]) if ours(c)}
    | {c for row in TROUBLE for c in code(row[2]) if ours(c)}
)


def test_the_tables_cover_every_runbook_command_and_troubleshooting_row():
    assert len(COMMANDS) >= 8 and len(EVERY_COMMAND) >= 10
    for runbook in RUNBOOK_COMMANDS:
        assert any(code(row[0])[0].startswith(runbook) for row in COMMANDS if code(row[0])), runbook
    issues = [row[0] for row in TROUBLE]
    for issue in RUNBOOK_ISSUES:
        assert issue in issues, f"runbook row {issue!r} missing from the README's troubleshooting table"
    for row in TROUBLE:
        assert all(row), f"every column filled: {row}"


@pytest.mark.parametrize("row", COMMANDS, ids=lambda row: code(row[1])[0][:60])
def test_each_runbook_command_maps_to_ours_with_the_runbook_flags(row):
    (theirs,) = code(row[0]) or [row[0]]
    passed_on = theirs.split(" -- ", 1)[1] if " -- " in theirs else ""  # pnpm hands what follows `--` over
    (mine,) = [c for c in code(row[1]) if ours(c)]
    assert flags(passed_on) <= flags(mine), f"{mine!r} lacks the runbook's {flags(passed_on) - flags(mine)}"


def help_argv(command: str) -> list[str]:
    """The program and its subcommands (the leading lower-case words), then --help: `ma-worker billing backfill
    --help` for `ma-worker billing backfill --org ORG_ID ...`."""
    program = next(p for p in OURS if command.startswith(p))
    words = shlex.split(command.replace("[", " ").replace("]", " "))[len(program.split()) :]
    sub = []
    for word in words:
        if not re.fullmatch(r"[a-z][a-z-]*", word):
            break
        sub.append(word)
    argv = program.split()
    if argv[0] in ("ma-worker", "ma-top"):
        argv[0] = str(BIN / argv[0])
    return [*argv, *sub, "--help"]


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=lambda c: c[:60])
def test_each_command_in_the_tables_runs_with_help_and_knows_every_flag_shown(command):
    result = subprocess.run(
        help_argv(command), cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"{command} --help: {result.stderr[-2000:]}"
    assert result.stdout.startswith("usage:"), result.stdout[:500]
    for flag in flags(command):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", result.stdout), (
            f"{command}: no {flag} in --help"
        )


def test_every_badge_and_finding_kind_named_in_troubleshooting_exists():
    kinds = set(re.findall(r"^\| `([a-z-]+)` \(", README, flags=re.M))  # the README's findings table
    assert {"no-workers", "redis-down", "memory-growth", "duplicates", "throttled"} <= kinds
    named = [token for row in TROUBLE for token in code(row[1])]
    badges = [t for t in named if re.fullmatch(r"[A-Z][A-Z ]+", t)]  # keys are one letter (`R`, `s`)
    findings = [kind for row in TROUBLE for kind in re.findall(r"finding `([^`]+)`", row[1])]
    assert len(badges) >= 8 and len(findings) >= 12
    for badge in badges:
        assert badge in BADGES.values() or badge == "REDIS DOWN", f"ma-top has no badge {badge!r}"
    for kind in findings:
        assert kind in kinds, f"no finding kind {kind!r}"
