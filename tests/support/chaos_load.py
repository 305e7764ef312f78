"""A chaos scenario's own load, with countable effects: its jobs and the rows they act on (`Load`,
`build_load`), the Node BullMQ producer that adds it at a steady rate and a few jobs through our CLI, and where its
jobs are (`job_states`, `drain`, the first completion after a fault, whether it is being processed)."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from redis.asyncio import Redis

from tests.support.chaos_stack import Stack
from tests.support.paths import BIN, ROOT


# -- the load -----------------------------------------------------------------------------------------------------
def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Load:
    """A scenario's mixed load with countable effects."""

    tag: str
    jobs: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    orgs: list[str] = field(default_factory=list)
    invitations: list[tuple[str, str]] = field(default_factory=list)
    usage_days: list[datetime] = field(default_factory=list)
    subs: list[str] = field(default_factory=list)
    bulk: tuple[str, list[str]] = ("", [])
    cli_jobs: list[tuple[str, str]] = field(default_factory=list)
    ids: dict[str, dict[str, str]] = field(default_factory=dict)

    def add(self, queue: str, key: str, name: str, data: dict[str, Any]) -> None:
        self.jobs.append({"queue": queue, "key": key, "name": name, "data": data})


async def build_load(stack: Stack, tag: str, scale: int = 1) -> Load:
    load = Load(tag)
    now = datetime.now(UTC)
    conn = await asyncpg.connect(stack.urls.admin)
    try:
        for i in range(40 * scale):
            task = f"ct_{tag}_{i}"
            load.tasks.append(task)
            load.add(
                "task-notifications",
                task,
                "task.assigned",
                {
                    "taskId": task,
                    "organizationId": "org_acme",
                    "tenantId": "org_acme_t1",
                    "assigneeId": "user_acme_2",
                    "assignedBy": "user_acme_1",
                    "assignedAt": iso(now),
                },
            )
        for i in range(10 * scale):
            org = f"org_{tag}_{i}"
            await conn.execute("INSERT INTO organizations (id, name, slug) VALUES ($1, $1, $1)", org)
            load.orgs.append(org)
            load.add("identity-events", org, "organization.created", {"organizationId": org})
        for i in range(8 * scale):
            inv, email = f"inv_{tag}_{i}", f"{tag}_{i}@chaos.example"
            await conn.execute(
                "INSERT INTO invitations (id, organization_id, tenant_id, email, role, invited_by)"
                " VALUES ($1, 'org_acme', 'org_acme_t1', $2, 'member', 'user_acme_1')",
                inv,
                email,
            )
            load.invitations.append((inv, email))
            load.add(
                "user-management-jobs",
                inv,
                "invitation.send",
                {
                    "invitationId": inv,
                    "organizationId": "org_acme",
                    "tenantId": "org_acme_t1",
                    "email": email,
                    "role": "member",
                    "invitedBy": "user_acme_1",
                },
            )
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        for i in range(6 * scale):
            day = today - timedelta(days=1 + i)
            load.usage_days.append(day)
            load.add(
                "billing-usage",
                f"usage_{i}",
                "usage.aggregate",
                {
                    "organizationId": "org_acme",
                    "subscriptionId": "sub_acme",
                    "periodStart": iso(day),
                    "periodEnd": iso(day + timedelta(days=1)),
                    "resolution": "hourly",
                },
            )
        start = today.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
        for i in range(4 * scale):
            sub = f"sub_{tag}_{i}"
            await conn.execute(
                "INSERT INTO subscriptions (id, organization_id, plan_id, current_period_start, current_period_end,"
                " stripe_payment_method) VALUES ($1, 'org_globex', 'plan_starter', $2, $3, 'pm_card_visa')",
                sub,
                start,
                end,
            )
            await conn.execute(
                "INSERT INTO usage_events (organization_id, subscription_id, feature, quantity,"
                " occurred_at) VALUES ('org_globex', $1, 'storage.gb', 12, $2)",
                sub,
                start,
            )
            load.subs.append(sub)
            load.add(
                "billing-invoice",
                sub,
                "invoice.generate",
                {
                    "organizationId": "org_globex",
                    "subscriptionId": sub,
                    "periodStart": iso(start),
                    "periodEnd": iso(end),
                },
            )
        users = [f"cu_{tag}_{i}" for i in range(30)]
        await conn.executemany(
            "INSERT INTO users (id, email, full_name) VALUES ($1, $1 || '@chaos.example', $1)",
            [(u,) for u in users],
        )
        load.bulk = (f"bulk_{tag}", users)
        load.add(
            "super-admin.bulk-job",
            "bulk",
            "bulk.suspend",
            {
                "bulkJobId": f"bulk_{tag}",
                "actorId": "user_root",
                "target": "users",
                "ids": users,
                "reason": "chaos",
            },
        )
    finally:
        await conn.close()
    random.Random(tag).shuffle(load.jobs)
    return load


def start_producer(stack: Stack, load: Load, rate: float) -> subprocess.Popen[str]:
    plan = stack.home / f"plan-{load.tag}.json"
    plan.write_text(json.dumps(load.jobs))
    return subprocess.Popen(
        ["node", "load.mjs", stack.valkey.url, str(plan), str(rate)],
        cwd=stack.node,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def cli_enqueue(stack: Stack, load: Load, count: int = 3) -> None:
    """A few jobs through our own CLI, during the load."""
    env = {**stack.env(), "MA_QUEUE_TABLE": "tests.support.table:CHAOS"}
    for i in range(count):
        task = f"ct_{load.tag}_cli_{i}"
        data = {
            "taskId": task,
            "organizationId": "org_acme",
            "tenantId": "org_acme_t1",
            "assigneeId": "user_acme_3",
            "assignedBy": "user_acme_1",
            "assignedAt": iso(datetime.now(UTC)),
        }
        out = subprocess.run(
            [
                str(BIN / "ma-worker"),
                "enqueue",
                "task-notifications",
                "task.assigned",
                "--data",
                json.dumps(data),
                "--job-id",
                f"cli-{task}",
            ],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if out.returncode == 0:
            load.tasks.append(task)
            load.cli_jobs.append(("task-notifications", f"cli-{task}"))


def finish_producer(proc: subprocess.Popen[str], load: Load, timeout: float = 240) -> None:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-2000:]
    load.ids = json.loads(out.strip().splitlines()[-1])
    for queue, job_id in load.cli_jobs:
        load.ids.setdefault(queue, {})[job_id] = job_id


# -- where the load's jobs are ------------------------------------------------------------------------------------
async def job_states(redis: Redis, load: Load) -> dict[str, list[tuple[str, str, str]]]:
    """queue -> [(job id, state, failed reason)] read straight from the job hashes and sets."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    for queue, ids in load.ids.items():
        rows = []
        for job_id in ids.values():
            key = f"bull:{queue}:{job_id}"
            async with redis.pipeline(transaction=False) as pipe:
                pipe.exists(key)
                pipe.hget(key, "finishedOn")
                pipe.zscore(f"bull:{queue}:failed", job_id)
                pipe.hget(key, "failedReason")
                exists, finished, failed, reason = await pipe.execute()
            if not exists:
                state = "lost"
            elif finished and failed is not None:
                state = "failed"
            elif finished:
                state = "completed"
            else:
                state = "pending"
            rows.append((job_id, state, reason or ""))
        out[queue] = rows
    return out


async def drain(stack: Stack, load: Load, timeout: float = 240) -> dict[str, list[tuple[str, str, str]]]:
    deadline = time.monotonic() + timeout
    while True:
        redis = stack.redis()
        try:
            states = await job_states(redis, load)
        finally:
            await redis.aclose()
        if all(s != "pending" for rows in states.values() for _, s, _ in rows) or time.monotonic() > deadline:
            return states
        await asyncio.sleep(1)  # the poll interval of a loop bounded by `deadline` (it returns what it saw)


async def first_completion_after(stack: Stack, load: Load, since_ms: int) -> float | None:
    redis = stack.redis()
    try:
        best = None
        for queue, ids in load.ids.items():
            for job_id in ids.values():
                finished = await redis.hget(f"bull:{queue}:{job_id}", "finishedOn")
                if finished and int(finished) >= since_ms:
                    best = min(best or int(finished), int(finished))
        return None if best is None else (best - since_ms) / 1000
    finally:
        await redis.aclose()


async def load_flowing(stack: Stack, load: Load, at_least: int = 3) -> bool:
    """Some of this load's notifications are written: the pools are processing it."""
    conn = await asyncpg.connect(stack.urls.tasks)
    try:
        done = await conn.fetchval(
            "SELECT count(DISTINCT task_id) FROM notifications WHERE task_id = ANY($1::text[])", load.tasks
        )
    finally:
        await conn.close()
    return done >= at_least


def tag() -> str:
    return uuid.uuid4().hex[:6]
