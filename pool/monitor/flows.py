"""A job's place in a BullMQ flow: its parent, its children by group, and what holds a parent back.

A parent added by a `FlowProducer` waits in `waiting-children` until the set of its pending children is
empty. A child that fails permanently leaves that set only when it was added with an option saying what its
failure does to the parent; by default it stays, and the parent waits for it for ever. This module reads the
dependency keys (`pool/contracts.py` `FLOW_*`), bounded: whole counts of every group, the states of up to
`PENDING_READ` pending children (to find the failed ones), at most `LIMIT` children listed per group, and says
in plain words which children hold a parent and when not every child was read.

Reads only, O(LIMIT + PENDING_READ) per job in a few pipelined round trips; run when a job's detail opens
(and again while it stays open), never on the refresh path.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from redis.asyncio import Redis

from pool.contracts import (
    BULL_PREFIX,
    FLOW_IGNORED,
    FLOW_PENDING,
    FLOW_PROCESSED,
    FLOW_UNSUCCESSFUL,
    STATE_KEYS,
    bull_key,
    split_job_key,
)

LIMIT = 50
"""Children listed per group (a parent may have thousands; the counts are always whole)."""
PENDING_READ = 1000
"""Pending children whose states are read, to find the failed ones that hold a parent (failed ones are listed
first); one pipelined round trip of 7 commands each (O(1), but LPOS on the short `active` list)."""

GROUPS = ("pending", "failed", "ignored", "processed")
"""The groups a parent's children fall in, in the order ma-top lists them."""
GROUP_TITLES = {
    "pending": "pending",
    "failed": "failed, failing the parent",
    "ignored": "failed, ignored by the parent",
    "processed": "processed",
}
ON_FAILURE = {
    "fpof": "on failure: the parent fails too (failParentOnFailure)",
    "cpof": "on failure: the parent starts anyway (continueParentOnFailure)",
    "idof": "on failure: the parent goes on without it, keeping its reason (ignoreDependencyOnFailure)",
    "rdof": "on failure: the parent forgets it (removeDependencyOnFailure)",
}
"""What a child's failure does to its parent, by the flag BullMQ keeps in the child's `parent` field."""
WAITS = "on failure: the parent waits in waiting-children until it is retried or removed (BullMQ's default)"
_SETS = ("completed", "failed", "delayed", "prioritized", "waiting-children")
"""The states kept in sorted sets, checked with ZSCORE in BullMQ's getState order (active apart)."""


@dataclass(frozen=True)
class FlowJob:
    """A parent or a child: where it is and how it is doing ("gone": its hash was removed)."""

    queue: str
    id: str
    name: str
    state: str
    reason: str = ""

    @property
    def label(self) -> str:
        return f"{self.queue}#{self.id}"


@dataclass(frozen=True)
class ChildGroup:
    total: int
    jobs: tuple[FlowJob, ...] = ()
    """The children listed, at most the list limit; pending ones failed first."""
    read: int | None = None
    """How many children's states were read (None: the ones listed)."""
    by_state: dict[str, int] | None = None
    """The children read, by state (None: the ones listed)."""

    @property
    def read_count(self) -> int:
        return len(self.jobs) if self.read is None else self.read

    @property
    def states(self) -> dict[str, int]:
        return dict(Counter(j.state for j in self.jobs)) if self.by_state is None else self.by_state

    @property
    def cut(self) -> bool:
        """Not every child's state was read: what is said of them is said of the ones read."""
        return self.total > self.read_count

    @property
    def unlisted(self) -> int:
        return self.total - len(self.jobs)


@dataclass(frozen=True)
class Flow:
    queue: str
    id: str
    state: str
    parent: FlowJob | None = None
    on_failure: str = ""
    """What this job's failure does to its parent (empty when it has none)."""
    holds_parent: bool = False
    """This job is among its parent's pending children."""
    deferred_failure: str = ""
    """BullMQ's `defa`: the failure a child passed on (failParentOnFailure), applied when a worker takes it."""
    groups: dict[str, ChildGroup] = field(default_factory=dict)

    def group(self, name: str) -> ChildGroup:
        return self.groups.get(name, ChildGroup(0))

    @property
    def children(self) -> int:
        return sum(g.total for g in self.groups.values())

    @property
    def blockers(self) -> tuple[FlowJob, ...]:
        """The pending children listed that failed: nothing will move them on by itself (how many there are
        among those read: `group("pending").states["failed"]`)."""
        return tuple(j for j in self.group("pending").jobs if j.state == "failed")

    def summary(self) -> list[str]:
        """What an on-call engineer reads first, each line true by itself."""
        return [text for text, _ in self.lines()]

    def alarms(self) -> list[str]:
        """The summary's lines that say a job is stuck or will fail (ma-top shows them in red)."""
        return [text for text, alarm in self.lines() if alarm]

    def lines(self) -> list[tuple[str, bool]]:
        """The summary, each line with whether it is an alarm."""
        lines: list[tuple[str, bool]] = []
        if self.parent is not None:
            p = self.parent
            lines.append((f"child of {p.label} {p.name} ({p.state})", False))
            if self.state != "completed":  # what its failure does (or did) to the parent
                lines.append((self.on_failure or WAITS, False))
            if self.holds_parent and self.state == "failed" and p.state == "waiting-children":
                lines.append((f"this failed job holds its parent {p.label} in waiting-children", True))
        if self.deferred_failure:
            lines.append((f"will fail when a worker takes it: {self.deferred_failure}", True))
        if not self.children:
            return lines
        counts = ", ".join(f"{self.group(g).total} {g}" for g in GROUPS if self.group(g).total)
        lines.append((f"{self.children} children: {counts}", False))
        pending = self.group("pending")
        waiting = self.state == "waiting-children"
        states = pending.states if waiting else {}
        cut = f"the first {pending.read_count} of {pending.total} pending read" if pending.cut else ""
        if failed := states.get("failed", 0):
            shown = [f"{j.label} {j.reason}".strip() for j in self.blockers[:3]]
            more = f"; and {failed - len(shown)} more" if failed > len(shown) else ""
            among = f" (in {cut})" if cut else ""
            lines.append(
                (f"blocked by {_children(failed, 'failed ')}{among}: {'; '.join(shown)}{more}", True)
            )
        if others := {s: n for s, n in sorted(states.items()) if s != "failed"}:
            by_state = ", ".join(f"{n} {s}" for s, n in others.items())
            if cut:
                lines.append((f"waiting for {_children(pending.total)}; {cut}: {by_state}", False))
            else:
                also = "more " if failed else ""
                lines.append((f"waiting for {_children(sum(others.values()), also)}: {by_state}", False))
        for name in ("failed", "ignored"):
            for j in self.group(name).jobs[:3]:
                lines.append((f"{GROUP_TITLES[name]}: {j.label} {j.reason}".strip(), False))
        return lines


async def read_flow(
    redis: Redis,
    queue: str,
    job_id: str,
    limit: int = LIMIT,
    pending_read: int = PENDING_READ,
    prefix: str = BULL_PREFIX,
) -> Flow | None:
    """The flow around one job; None when the job is gone. `limit` children listed per group; the states of
    up to `pending_read` pending children read."""
    key = bull_key(queue, job_id, prefix=prefix)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hmget(key, "parentKey", "parent", "defa")
        pipe.scard(f"{key}:{FLOW_PENDING}")
        pipe.zcard(f"{key}:{FLOW_UNSUCCESSFUL}")
        pipe.hlen(f"{key}:{FLOW_IGNORED}")
        pipe.hlen(f"{key}:{FLOW_PROCESSED}")
        (parent_key, parent_raw, defa), *totals = await pipe.execute()
    (me,) = await job_states(redis, [(queue, job_id)], prefix=prefix)
    if me.state == "gone":
        return None
    counts = dict(zip(GROUPS, (int(n) for n in totals), strict=True))
    parent, on_failure, holds = None, "", False
    where = split_job_key(parent_key, prefix) if parent_key else None
    if where is not None:
        (parent,) = await job_states(redis, [where], prefix=prefix)
        opts = _loads(parent_raw)
        on_failure = next((text for flag, text in ON_FAILURE.items() if opts.get(flag)), "")
        holds = bool(await redis.sismember(f"{parent_key}:{FLOW_PENDING}", key))
    groups = {g: ChildGroup(n) for g, n in counts.items() if n}
    if counts["pending"]:
        keys = await _scan(redis, "sscan", f"{key}:{FLOW_PENDING}", max(limit, pending_read))
        jobs = await job_states(redis, _split(keys, prefix), prefix=prefix)
        jobs.sort(key=lambda j: (j.state != "failed", j.queue, _id_order(j.id)))
        by_state = dict(Counter(j.state for j in jobs))
        groups["pending"] = ChildGroup(counts["pending"], tuple(jobs[:limit]), len(jobs), by_state)
    if counts["failed"]:
        keys = cast(list[str], await redis.zrange(f"{key}:{FLOW_UNSUCCESSFUL}", 0, limit - 1))
        groups["failed"] = ChildGroup(
            counts["failed"], tuple(await job_states(redis, _split(keys, prefix), prefix=prefix))
        )
    for name, suffix in (("ignored", FLOW_IGNORED), ("processed", FLOW_PROCESSED)):
        if counts[name]:
            pairs = await _scan(redis, "hscan", f"{key}:{suffix}", limit)
            jobs = await job_states(redis, _split(list(pairs), prefix), prefix=prefix)
            if name == "ignored":  # the reason as the parent recorded it (the child may be gone since)
                reasons = {split_job_key(k, prefix): v for k, v in pairs.items()}
                jobs = [_with_reason(j, reasons.get((j.queue, j.id)) or j.reason) for j in jobs]
            jobs.sort(key=lambda j: (j.queue, _id_order(j.id)))
            groups[name] = ChildGroup(counts[name], tuple(jobs))
    return Flow(queue, job_id, me.state, parent, on_failure, holds, defa or "", groups)


async def job_states(
    redis: Redis, jobs: Sequence[tuple[str, str]], prefix: str = BULL_PREFIX
) -> list[FlowJob]:
    """Name, state and failed reason of each (queue, id), in one pipelined round trip, O(1) per job but for
    `LPOS` on `active` (as long as the queue's concurrency). A job in none of the state sets nor in active is
    reported `waiting` (the `wait` list is not searched: it can hold millions)."""
    if not jobs:
        return []
    active = STATE_KEYS["active"][0]
    async with redis.pipeline(transaction=False) as pipe:
        for queue, job_id in jobs:
            pipe.hmget(bull_key(queue, job_id, prefix=prefix), "name", "failedReason")
            for state in _SETS:
                pipe.zscore(bull_key(queue, STATE_KEYS[state][0], prefix=prefix), job_id)
            pipe.lpos(bull_key(queue, active, prefix=prefix), job_id)
        replies: list[Any] = await pipe.execute()
    per = 2 + len(_SETS)
    result = []
    for i, (queue, job_id) in enumerate(jobs):
        (name, reason), *scores, position = replies[i * per : (i + 1) * per]
        if name is None:
            state = "gone"
        elif position is not None:
            state = "active"
        else:
            state = next((s for s, score in zip(_SETS, scores, strict=True) if score is not None), "waiting")
        result.append(FlowJob(queue, job_id, name or "?", state, (reason or "") if state == "failed" else ""))
    return result


async def _scan(redis: Redis, command: str, key: str, limit: int) -> Any:
    """Up to `limit` members of a set (`sscan`, a list) or fields of a hash (`hscan`, a dict), whatever its
    size: SCAN's COUNT is only a hint, so it loops, stopping at `limit` or at the end."""
    found: Any = {} if command == "hscan" else []
    cursor = 0
    while True:
        cursor, batch = await getattr(redis, command)(key, cursor, count=limit)
        if command == "hscan":
            found.update(batch)
        else:
            found.extend(batch)
        if not cursor or len(found) >= limit:
            break
    if command == "hscan":
        return dict(list(found.items())[:limit])
    return found[:limit]


def _children(n: int, adjective: str = "") -> str:
    return f"{n} {adjective}{'child' if n == 1 else 'children'}"


def _split(keys: Sequence[str], prefix: str) -> list[tuple[str, str]]:
    return [where for k in keys if (where := split_job_key(k, prefix)) is not None]


def _with_reason(job: FlowJob, reason: str) -> FlowJob:
    return FlowJob(job.queue, job.id, job.name, job.state, reason)


def _id_order(job_id: str) -> tuple[int, str]:
    """Numeric ids in number order (BullMQ's own ids), custom ids after them by text."""
    return (int(job_id), "") if job_id.isdigit() else (1 << 62, job_id)


def _loads(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
