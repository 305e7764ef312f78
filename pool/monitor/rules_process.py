"""The rules about processes: a queue with jobs and no worker (and why: supervisord's view of its slots), and
jobs on a queue no pool handles. Part of `pool.monitor.findings`' rule set.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Sequence

from pool.monitor.finding import SUPERVISORCTL, Finding, age
from pool.monitor.snapshot import QueueStats
from pool.monitor.supervisor_source import ProcessInfo, endpoint_label

RESTART_LOOP_S = 300
"""A process that exited this recently and runs again without a heartbeat may be looping: the finding says so."""


def no_handler(q: QueueStats, waiting: int, queue_names: Collection[str]) -> Finding:
    near = difflib.get_close_matches(q.name, list(queue_names), n=1, cutoff=0.8)
    hint = f"; did you mean `{near[0]}`?" if near else ""
    return Finding(
        "warning",
        "no-handler",
        q.name,
        f"jobs on a queue no pool handles{hint}",
        f"waiting {waiting}, delayed {q.counts['delayed']}, not in the queue table",
        f"fix the producer's queue name to `{near[0]}`"
        if near
        else "register a handler (CONTRIBUTING: Adding a product queue) or fix the producer's queue name",
        goto=f"queue:{q.name}",
    )


def no_workers(q: QueueStats, waiting: int, processes: Sequence[ProcessInfo] | None) -> Finding:
    oldest = f", oldest {age(q.oldest_waiting_s)}" if q.oldest_waiting_s is not None else ""
    evidence = f"waiting {waiting}{oldest}, 0 heartbeats"
    why, action = _why_no_worker(q.name, processes)
    return Finding(
        "critical", "no-workers", q.name, f"no worker: {why}", evidence, action, goto=f"process:{q.name}"
    )


def _why_no_worker(queue: str, processes: Sequence[ProcessInfo] | None) -> tuple[str, str]:
    status = f"ma-top 3 (processes); {SUPERVISORCTL} status {queue}:*"
    if processes is None:
        return "no slot's heartbeat in Redis", status
    mine = [p for p in processes if p.group == queue]
    if not mine:
        hosts = ", ".join(sorted({endpoint_label(p.endpoint) for p in processes})) or "none"
        return (
            f"no supervisord program `{queue}` on any host read ({hosts})",
            f"add [program:{queue}] to supervisord.conf, then {SUPERVISORCTL} update",
        )
    broken = [p for p in mine if p.state in ("FATAL", "BACKOFF")]
    if broken:
        p = broken[0]
        detail = p.spawnerr or p.description
        exit_status = f"exit status {p.exitstatus}, " if p.exitstatus else ""
        return (
            f"{len(broken)} of {len(mine)} process(es) {p.state} on {endpoint_label(p.endpoint)} "
            f"({exit_status}{detail})",
            f"ma-top 3, l on {p.full_name} (log tail), a to start; {SUPERVISORCTL} tail {p.full_name}",
        )
    crashed = [p for p in mine if p.state == "EXITED" and p.exitstatus]
    if crashed:  # exited unexpectedly; supervisord restarts it (autorestart) until `startretries` runs out
        p = crashed[0]
        return (
            f"{len(crashed)} of {len(mine)} process(es) on {endpoint_label(p.endpoint)} exited "
            f"(exit status {p.exitstatus}) {age(p.now - p.stop)} ago",
            f"ma-top 3, l on {p.full_name} (log tail); {SUPERVISORCTL} tail {p.full_name}",
        )
    restarted = [
        p
        for p in mine
        if p.state in ("STARTING", "RUNNING") and 0 < p.stop <= p.start and p.now - p.stop <= RESTART_LOOP_S
    ]
    if restarted:  # supervisord clears the exit status on a restart: what is left is the time of the exit
        p = max(restarted, key=lambda p: p.stop)
        return (
            f"{len(restarted)} of {len(mine)} process(es) on {endpoint_label(p.endpoint)} exited "
            f"{age(p.now - p.stop)} ago and restarted, no heartbeat yet (now {p.state}): a restart loop if "
            "it lasts",
            f"ma-top 3, l on {p.full_name} (log tail); {SUPERVISORCTL} tail {p.full_name}",
        )
    stopped = [p for p in mine if p.state in ("STOPPED", "EXITED", "STOPPING")]
    if len(stopped) == len(mine):
        hosts = ", ".join(sorted({endpoint_label(p.endpoint) for p in stopped}))
        return (
            f"{len(stopped)} process(es) {stopped[0].state} on {hosts}",
            f"ma-top 3, a on the process; {SUPERVISORCTL} start {queue}:*",
        )
    states = ", ".join(sorted({p.state for p in mine}))
    return (
        f"{len(mine)} process(es) {states} but no heartbeat (still starting, or cannot reach Redis)",
        f"ma-top 3, l (log tail); {SUPERVISORCTL} tail {mine[0].full_name}",
    )
