"""Bulk actions on exactly the ids an operator confirmed: requeue (failed), promote (delayed), remove (any
state but active). No Textual here; the caller journals (`DataSource.act`, `ma-worker jobs`).

Each job goes through bullmq's own Lua scripts (`reprocessJob`, `promote`, `removeJob`), which check the
state inside Redis: a job that left failed (or delayed) since the search is skipped, never moved, and a job
that failed only after the confirm is not in the id list at all. `removeJob` refuses a locked job (it
returns 0); active jobs are skipped before it is called. Skipped jobs are counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bullmq import Queue
from redis.asyncio import Redis

from pool.contracts import BULL_PREFIX, STATE_KEYS, bull_key
from pool.monitor.search import stop_if_cancelled

Action = Literal["requeue", "promote", "remove"]
ACTIONS: tuple[Action, ...] = ("requeue", "promote", "remove")
ACTION_STATE: dict[Action, str] = {"requeue": "failed", "promote": "delayed"}
"""The one state each action takes jobs from (remove: any but active)."""


@dataclass(frozen=True)
class ActionResult:
    done: int
    skipped: int

    @property
    def outcome(self) -> str:
        """What the journal records: `done N, skipped M`."""
        return f"done {self.done}, skipped {self.skipped}"


@dataclass(frozen=True)
class _JobRef:
    """What bullmq's `reprocessJob` reads of a job: its id and whether it was added LIFO."""

    id: str
    opts: dict[str, Any] = field(default_factory=dict)


async def act(
    redis: Redis,
    queue: str,
    action: Action,
    ids: Sequence[str],
    *,
    batch: int = 500,
    progress: Callable[[int, int], None] | None = None,
    prefix: str = BULL_PREFIX,
) -> ActionResult:
    """Apply `action` to exactly these ids, `batch` at a time; `progress(processed, len(ids))` after each."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    scripts = Queue(queue, {"connection": redis, "prefix": prefix}).backend.scripts
    active = bull_key(queue, STATE_KEYS["active"][0], prefix=prefix)
    done = skipped = 0
    for start in range(0, len(ids), batch):
        chunk = list(ids[start : start + batch])
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in chunk:  # what each job needs before its script runs, in one round trip
                pipe.hget(bull_key(queue, job_id, prefix=prefix), "opts")
                pipe.exists(bull_key(queue, job_id, prefix=prefix))
                pipe.lpos(active, job_id)
            facts = await pipe.execute()
        for n, job_id in enumerate(chunk):
            opts, exists, active_at = facts[3 * n : 3 * n + 3]
            if not exists or (action == "remove" and active_at is not None):
                skipped += 1
                continue
            if await _apply(scripts, action, job_id, opts):
                done += 1
            else:
                skipped += 1
        if progress:
            progress(min(start + batch, len(ids)), len(ids))
        stop_if_cancelled()  # between batches: what is done stays done
    return ActionResult(done, skipped)


async def _apply(scripts: Any, action: Action, job_id: str, opts_json: str | None) -> bool:
    """One bullmq script; False when Redis says the job is not (or no longer) where the action applies."""
    if action == "remove":
        return bool(await scripts.remove(job_id, True) == 1)  # 0: locked, -8: a scheduler's next run
    try:
        if action == "requeue":
            lifo = '"lifo":true' in (opts_json or "").replace(" ", "")
            ref = _JobRef(job_id, {"lifo": True} if lifo else {})
            await scripts.reprocessJob(ref, "failed", {"resetAttemptsMade": True})
        else:
            await scripts.promote(job_id)
    except TypeError:  # bullmq's finishedErrors: missing key, or not in the state (-1 / -3)
        return False
    return True
