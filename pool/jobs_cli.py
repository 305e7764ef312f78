"""`ma-worker jobs search|requeue|promote|remove|top`: find the jobs that matter with a filter expression
(pool/monitor/filters.py) and act on exactly the ones matched, through the same data layer as ma-top.

search prints the honest summary (scanned, matched, whether the cap cut it short) and the matches;
requeue/promote/remove search, print a preview (count, names, oldest/newest, sample ids), then act only after a
`y` on a terminal or `--yes` (`--dry-run` changes nothing), in batches with progress on stderr, journaled with
the expression and the ids. top counts the values of one field over a bounded sample of a state.
A bad expression is a CliError (exit 2) naming the token.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from pool.enqueue import CliError

if TYPE_CHECKING:  # the data layer is imported when a jobs command runs, not when the parser is built
    from pool.monitor.bulk_actions import Action
    from pool.monitor.search import SearchProgress, SearchResult
    from pool.monitor.source import LiveSource

PROGRESS_EVERY = 5_000
PAST = {"requeue": "requeued", "promote": "promoted", "remove": "removed"}


def _progress(p: SearchProgress) -> None:
    if p.scanned % PROGRESS_EVERY == 0 or p.scanned >= p.total_in_state:
        print(
            f"scanning {p.queue} {p.state}: {p.scanned:,} of {p.total_in_state:,}, {p.matched:,} matched",
            file=sys.stderr,
        )


def _act_progress(action: str) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        print(f"{action}: {done:,} of {total:,}", file=sys.stderr)

    return show


def _states(args: argparse.Namespace) -> list[str]:
    from pool.monitor.bulk_actions import ACTION_STATE

    command: str = args.jobs_command
    for action, state in ACTION_STATE.items():
        if command == action:
            if args.state not in (None, [state]):
                raise CliError(f"{command} takes jobs from {state} only")
            return [state]
    wanted = list(args.state or ["failed"])
    if command == "remove" and "active" in wanted:
        raise CliError("remove never touches active jobs (a worker holds them)")
    return wanted


async def _search(source: LiveSource, args: argparse.Namespace) -> SearchResult:
    from pool.monitor.filters import FilterError

    try:
        return await source.search(args.queue, _states(args), args.filter or "", args.cap, _progress)
    except FilterError as error:
        raise CliError(str(error)) from None
    except ValueError as error:  # an unknown state
        raise CliError(str(error)) from None


def _search_output(result: SearchResult, args: argparse.Namespace) -> str:
    shown = result.matches[: args.limit]
    if args.json:
        out: dict[str, Any] = {
            "queue": result.queue,
            "expression": result.expression,
            "summary": result.summary,
            "states": list(result.states),
            "scanned": dict(result.scanned),
            "totals": dict(result.totals),
            "capped": dict(result.capped),
            "cap": result.cap,
            "matched": len(result.matches),
            "matches": [asdict(m) for m in shown],
        }
        return json.dumps(out, indent=2)
    lines = [result.summary]
    for m in shown:
        reason = m.failed_reason.splitlines()[0][:80] if m.failed_reason else ""
        age_s = max(0, result.now_ms - m.timestamp) // 1000
        lines.append(f"{m.id:>12}  {m.state:<9} {m.name:<28} try={m.attempts_made:<2} age={age_s}s  {reason}")
    if len(result.matches) > len(shown):
        lines.append(f"... {len(result.matches) - len(shown):,} more (--limit)")
    return "\n".join(lines)


async def run(args: argparse.Namespace, url: str, confirm: Callable[[str], bool]) -> tuple[str, int]:
    """One `ma-worker jobs` command: (what to print on stdout, exit code)."""
    from pool.monitor.filters import FilterError
    from pool.monitor.search import preview
    from pool.monitor.source import LiveSource

    source = LiveSource.from_url(url)
    try:
        if args.jobs_command == "top":
            try:
                top = await source.top_values(args.queue, args.field, args.sample, args.state)
            except (FilterError, ValueError) as error:
                raise CliError(str(error)) from None
            if args.json:
                return json.dumps(asdict(top) | {"counts": [list(c) for c in top.counts]}, indent=2), 0
            return "\n".join(top.lines()), 0
        result = await _search(source, args)
        if args.jobs_command == "search":
            return _search_output(result, args), 0
        action: Action = args.jobs_command
        print("\n".join(preview(result).lines()))
        if args.dry_run:
            return f"dry run: nothing {PAST[action]}", 0
        if not result.matches:
            return f"nothing to {action}", 0
        if not args.yes and not confirm(f"{action} these {len(result.matches):,} jobs? [y/N] "):
            return f"nothing {PAST[action]}", 1
        outcome = await source.act(args.queue, action, result.ids, result.expression, _act_progress(action))
        return f"{PAST[action]} {outcome.done:,} of {len(result.matches):,} ({outcome.outcome})", 0
    finally:
        await source.close()


def add_parser(sub: Any, func: Callable[[argparse.Namespace], int]) -> None:
    """The `jobs` subcommands on `ma-worker`'s parser."""
    jobs = sub.add_parser("jobs", help="search a queue's jobs with a filter; act on what matched; top values")
    jsub = jobs.add_subparsers(dest="jobs_command", required=True)
    search = jsub.add_parser("search", help="the jobs matching a filter, newest first (bounded, honest)")
    search.add_argument("queue")
    search.add_argument("--state", action="append", help="state(s) to search (repeat; default failed)")
    search.add_argument("--filter", default="", help="e.g. 'name=invoice.generate reason~timeout age>10m'")
    search.add_argument("--limit", type=int, default=50, help="matches to print (default 50)")
    search.add_argument(
        "--cap", type=int, default=10_000, help="jobs read per state at most (default 10,000)"
    )
    search.add_argument("--json", action="store_true")
    for action, helptext in (
        ("requeue", "failed jobs matching a filter back to wait, fresh attempts"),
        ("promote", "delayed jobs matching a filter to wait now"),
        ("remove", "remove jobs matching a filter (any state but active; --state, default failed)"),
    ):
        cmd = jsub.add_parser(action, help=helptext)
        cmd.add_argument("queue")
        cmd.add_argument("--filter", required=True, help="the filter expression ('' matches every job)")
        cmd.add_argument(
            "--state",
            action="append",
            help="remove: the state(s) to remove from (repeat; default failed); requeue: failed; promote: delayed",
        )
        cmd.add_argument("--dry-run", action="store_true", help="print the preview; change nothing")
        cmd.add_argument("--yes", action="store_true", help="do not ask (needed without a terminal)")
        cmd.add_argument(
            "--cap", type=int, default=10_000, help="jobs read per state at most (default 10,000)"
        )
    top = jsub.add_parser("top", help="the most common values of a field (who floods this queue)")
    top.add_argument("queue")
    top.add_argument("field", help="name, data.organizationId, ...")
    top.add_argument("--state", default="waiting")
    top.add_argument("--sample", type=int, default=10_000, help="newest jobs read (default 10,000)")
    top.add_argument("--json", action="store_true")
    for cmd in (search, top, *(jsub.choices[a] for a in PAST)):
        cmd.add_argument("--redis-url", help="defaults to $REDIS_URL")
        cmd.set_defaults(func=func)
