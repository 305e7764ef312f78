"""Chaos: the whole stack under supervisord with a steady mixed load, one fault at a time, then invariants.

Each scenario builds its own load (unique ids, so effects are countable), has a Node BullMQ producer add it at a
steady rate (plus a few jobs through our own CLI), injects its fault while the load runs, waits for the queues to
drain and checks, counting in the databases and at the doubles:
- every accepted job ended completed, or failed with a reason (none lost, none stuck);
- each side effect happened exactly once (notifications, org bootstraps, invitations, rollups, invoices and
  Stripe charges, bulk items);
- no supervisord process ended FATAL; no secret appears in any log.
Under every scenario but the 5-minute outages runs a steady background load of every job name at
MA_CHAOS_LOAD_RATE jobs/s (default 60, half of the pool's capacity; tests/support/chaos.py): none of its jobs may
be lost or fail either, and its pickup p99 before, during and after the fault and the time to drain the backlog
the fault built are recorded. MA_CHAOS_LOAD_RATE=0 runs the scenarios without it (CI, .ci/run). The outages keep
their own steady load only: at 60 jobs/s five minutes of a downstream down queue 18,000 jobs, whose drain alone
(at the net 60 jobs/s left at the reference capacity, less on a shared machine) would exceed their timeout.
Figures (jobs in, completed, failed, lost, duplicated, recovery time, pickup, drain) go to var/chaos-results.json
for bench/REPORT.md. Run alone with `-m chaos`.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import time
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import stripe as stripe_sdk
from redis.asyncio import Redis

from devstack import databases, engines
from pool.supervise import supervisord_env
from tests.support.chaos import BEFORE_S, KEEP, LOAD_RATE, BackgroundLoad
from tests.support.doubles import IdentityDouble, StripeDouble
from tests.support.loadstack import paid_invoice
from tests.support.mix import Mix
from tests.support.paths import BIN, ROOT
from tests.support.processes import SERVICE_KEY, pool_env
from tests.support.supervisord import Supervisord
from tests.support.waits import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.chaos, pytest.mark.timeout(600 if LOAD_RATE == 0 else 900)]
RESULTS = ROOT / "var" / "chaos-results.json"
FLOWING_S = 30 if LOAD_RATE == 0 else 120
"""How long a scenario waits for its first jobs to complete: under the background load they queue behind its
backlog (a few seconds at the reference capacity; up to a minute on a busy shared machine)."""
POOL_PROGRAMS = (
    "identity-events",
    "user-management-jobs",
    "task-notifications",
    "super-admin.bulk-job",
    "billing-usage",
    "billing-invoice",
    "billing-payment-sync",
)


@dataclass
class Stack:
    home: Path
    pg: engines.Engine
    valkey: engines.Engine
    urls: databases.DatabaseUrls
    identity: IdentityDouble
    stripe: StripeDouble
    sup: Supervisord
    node: Path

    def redis(self, timeout: float = 10) -> Redis:
        return Redis.from_url(self.valkey.url, decode_responses=True, socket_timeout=timeout)

    def env(self) -> dict[str, str]:
        return pool_env(self.valkey.url, self.urls, IDENTITY_BASE_URL=self.identity.url, **self.stripe.env())

    def pool_processes(self) -> list[dict[str, Any]]:
        return [p for p in self.sup.processes() if p["group"] in POOL_PROGRAMS]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, node_bullmq: Path) -> Any:
    home = tmp_path_factory.mktemp("chaos")
    pg = engines.postgres(home / "pg" / "data").start()  # durable: it is stopped and started mid-run
    valkey = engines.valkey(home / "valkey")  # AOF on, noeviction: as production should run it
    valkey.start()
    urls = databases.bootstrap(pg.url)
    identity = IdentityDouble(urls.admin, home / "identity-double.log")
    stripe = StripeDouble(home / "stripe-double.log", state_file=home / "stripe-state.pickle")
    env = pool_env(
        valkey.url,
        urls,
        MA_QUEUE_TABLE="tests.support.table:CHAOS",
        IDENTITY_BASE_URL=identity.url,
        MA_INVOICE_DIR=str(home / "invoices"),
        MA_EXPORT_DIR=str(home / "exports"),
        MA_EXPORTER_PORT=str(engines.free_port()),
        MA_PROCS_BILLING_USAGE="2",
        MA_PROCS_TASK_NOTIFICATIONS="2",
        **stripe.env(),
    )
    (home / "host").mkdir()
    sup = Supervisord(home / "host", supervisord_env(env))
    sup.wait_all_running(timeout=40)
    yield Stack(home, pg, valkey, urls, identity, stripe, sup, node_bullmq)
    sup.stop()
    identity.stop()
    stripe.stop()
    valkey.stop()
    pg.stop()


@pytest.fixture(scope="module")
def mix(stack: Stack) -> Mix | None:
    """The background load's job maker: its organizations and users inserted, a paid invoice for payment jobs
    (none with the load off: MA_CHAOS_LOAD_RATE=0)."""
    if LOAD_RATE == 0:
        return None
    made = Mix(opts=dict(KEEP))

    async def prepare() -> None:
        await made.prepare(stack.urls.admin)
        made.invoice = await paid_invoice(stack.valkey.url, stack.urls.admin, made)

    asyncio.run(prepare())
    return made


@pytest.fixture
async def bg(stack: Stack, mix: Mix | None) -> Any:
    """The steady mixed background load of one scenario, started before it and stopped once the backlog its fault
    built has drained (`bg.stop()`); a no-op with MA_CHAOS_LOAD_RATE=0."""
    load = BackgroundLoad(stack.valkey.url, stack.urls.admin, stack.node, stack.home, mix, LOAD_RATE)
    await load.start()
    if load.on:
        await asyncio.sleep(BEFORE_S)  # the load alone first: the figures' `before` phase
    yield load
    if load.proc is not None and load.proc.poll() is None:
        load.proc.kill()
        load.proc.wait()
    if load.sampler is not None:
        load.sampler.cancel()


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


# -- invariants ---------------------------------------------------------------------------------------------------
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


async def duplicated_effects(stack: Stack, load: Load) -> dict[str, int]:
    """Effects beyond one per unit of work, and units of work with no effect (counted separately by caller)."""
    dup: dict[str, int] = {}
    missing: dict[str, int] = {}
    tasks_db = await asyncpg.connect(stack.urls.tasks)
    identity_db = await asyncpg.connect(stack.urls.admin)
    try:
        rows = await tasks_db.fetch(
            "SELECT task_id, count(*) AS n FROM notifications WHERE task_id = ANY($1::text[])"
            " GROUP BY task_id",
            load.tasks,
        )
        counts = {r["task_id"]: r["n"] for r in rows}
        dup["notifications"] = sum(n - 1 for n in counts.values() if n > 1)
        missing["notifications"] = sum(1 for t in load.tasks if t not in counts)

        rows = await tasks_db.fetch(
            "SELECT organization_id, count(*) AS n FROM entitlements WHERE organization_id ="
            " ANY($1::text[]) GROUP BY organization_id",
            load.orgs,
        )
        per_org = {r["organization_id"]: r["n"] for r in rows}
        defaults = await identity_db.fetchval(
            "SELECT count(*) FROM product_default_entitlements WHERE product_slug = 'tasks'"
        )
        dup["entitlements"] = sum(n - defaults for n in per_org.values() if n > defaults)
        missing["org bootstraps"] = sum(1 for o in load.orgs if per_org.get(o) != defaults)

        emails = [e for _, e in load.invitations]
        rows = await identity_db.fetch(
            "SELECT email, invite_count FROM auth_users WHERE email = ANY($1::text[])", emails
        )
        dup["invites"] = sum(r["invite_count"] - 1 for r in rows)
        missing["invites"] = len(emails) - len(rows)

        wrong_rollups = 0
        for day in load.usage_days:
            raw = await identity_db.fetchval(
                "SELECT coalesce(sum(quantity), 0) FROM usage_events WHERE subscription_id = 'sub_acme' AND"
                " occurred_at >= $1 AND occurred_at < $2",
                day,
                day + timedelta(days=1),
            )
            rolled = await identity_db.fetchval(
                "SELECT coalesce(sum(quantity), 0) FROM usage_rollups WHERE subscription_id = 'sub_acme' AND"
                " resolution = 'hourly' AND bucket_start >= $1 AND bucket_start < $2",
                day,
                day + timedelta(days=1),
            )
            wrong_rollups += int(raw != rolled)
        dup["rollups (sum differs from raw)"] = wrong_rollups

        rows = await identity_db.fetch(
            "SELECT subscription_id, id, payment_status FROM invoices WHERE subscription_id"
            " = ANY($1::text[])",
            load.subs,
        )
        invoices = {r["subscription_id"]: r for r in rows}
        dup["invoices"] = len(rows) - len(invoices)
        missing["invoices paid"] = sum(
            1 for s in load.subs if s not in invoices or invoices[s]["payment_status"] != "paid"
        )
        charges: dict[str, int] = {}
        client = stripe_sdk.StripeClient(stack.stripe.SECRET_KEY, base_addresses={"api": stack.stripe.url})
        params: dict[str, Any] = {"limit": 100}
        for _ in range(1000):  # bounded: 100,000 intents is far beyond any run of this module
            page = client.v1.payment_intents.list(params)
            for intent in page.data:
                invoice_id = intent.metadata.to_dict().get("invoiceId")
                if invoice_id:
                    charges[invoice_id] = charges.get(invoice_id, 0) + 1
            if not page.has_more:
                break
            params["starting_after"] = page.data[-1].id
        else:
            raise AssertionError("more than 1000 pages of PaymentIntents at the Stripe double")
        dup["stripe charges"] = sum(charges.get(r["id"], 0) - 1 for r in rows if charges.get(r["id"], 0) > 1)

        bulk_id, users = load.bulk
        rows = await identity_db.fetch(
            "SELECT target_id, count(*) AS n FROM audit_events WHERE details->>'bulkJobId'"
            " = $1 GROUP BY target_id",
            bulk_id,
        )
        dup["bulk items"] = sum(r["n"] - 1 for r in rows)
        missing["bulk items"] = len(users) - len(rows)
    finally:
        await tasks_db.close()
        await identity_db.close()
    return {**dict(dup.items()), **{f"missing {k}": v for k, v in missing.items()}}


def secrets_in_logs(stack: Stack) -> list[str]:
    secrets = [SERVICE_KEY, stack.stripe.SECRET_KEY, stack.stripe.WEBHOOK_SECRET]
    found = []
    for log in (stack.sup.home / "var" / "log").glob("*.log"):
        text = log.read_text(errors="replace")
        found += [f"{log.name}: {s[:6]}..." for s in secrets if s in text]
    return found


async def verify(
    stack: Stack,
    load: Load,
    scenario: str,
    started: float,
    *,
    recovery_s: float | None = None,
    extra: dict[str, Any] | None = None,
    bg: BackgroundLoad | None = None,
) -> dict[str, Any]:
    if bg:
        await bg.stop()
    states = await drain(stack, load)
    flat = [(q, *row) for q, rows in states.items() for row in rows]
    effects = await duplicated_effects(stack, load)
    fatal = [f"{p['group']}:{p['name']}" for p in stack.sup.processes() if p["statename"] == "FATAL"]
    figures = {
        "scenario": scenario,
        "jobs_in": len(flat),
        "completed": sum(1 for *_, s, _ in flat if s == "completed"),
        "failed_with_reason": sum(1 for *_, s, r in flat if s == "failed" and r),
        "failed_without_reason": sum(1 for *_, s, r in flat if s == "failed" and not r),
        "lost": sum(1 for *_, s, _ in flat if s in ("lost", "pending")),
        "duplicated": sum(v for k, v in effects.items() if not k.startswith("missing")),
        "missing_effects": sum(v for k, v in effects.items() if k.startswith("missing")),
        "fatal": len(fatal),
        "secrets_in_logs": len(secrets_in_logs(stack)),
        "recovery_s": recovery_s,
        "elapsed_s": round(time.monotonic() - started, 1),
        **(extra or {}),
        **(await background_figures(stack, bg) if bg else {}),
    }
    record(figures)
    failures = [(q, j, r) for q, j, s, r in flat if s == "failed"]
    assert figures["lost"] == 0, [row for row in flat if row[2] in ("lost", "pending")][:10]
    assert figures["failed_without_reason"] == 0
    assert figures["duplicated"] == 0 and figures["missing_effects"] == 0, effects
    assert not failures, failures[:10]  # this load is all valid: everything completes once the fault is over
    assert not fatal, fatal
    assert figures["secrets_in_logs"] == 0, secrets_in_logs(stack)
    if bg:  # the background load: every job of it completed too
        assert not bg.lost and not bg.failed, (bg.lost[:10], bg.failed[:10])
    return figures


async def background_figures(stack: Stack, bg: BackgroundLoad) -> dict[str, Any]:
    redis = stack.redis()
    try:
        return await bg.figures(redis)
    finally:
        await redis.aclose()


def record(figures: dict[str, Any]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[figures["scenario"]] = {**figures, "at": datetime.now(UTC).isoformat(timespec="seconds")}
    RESULTS.write_text(json.dumps(results, indent=2))


def tag() -> str:
    return uuid.uuid4().hex[:6]


# -- evidence that a fault was hit ----------------------------------------------------------------------------------
# A scenario that passes because its fault never met the load proves nothing. Each one reads, before and after, the
# counters its fault must move: the pool's `ma:stats:<queue>` hashes (cumulative across this module's scenarios,
# so compared as deltas) and the doubles' `/__stats` (never reset here, so deltas too).
async def pool_counter(stack: Stack, counter: str, scopes: tuple[str, ...] = POOL_PROGRAMS) -> int:
    """The sum of the `ma:stats:<scope>` counter (retries, throttled, stalled, connection_failures) over scopes."""
    redis = stack.redis()
    try:
        return sum([int(await redis.hget(f"ma:stats:{scope}", counter) or 0) for scope in scopes])
    finally:
        await redis.aclose()


async def counter_moved(
    stack: Stack, counter: str, before: int, what: str, scopes: tuple[str, ...] = POOL_PROGRAMS
) -> int:
    """Wait until the counter is past `before` (pools flush their counters every few seconds); the delta."""

    async def delta() -> int:
        return max(0, await pool_counter(stack, counter, scopes) - before)

    return await wait_for(delta, timeout=30, what=what)


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


async def stalls_of(
    stack: Stack, load: Load, since_ms: int, also: dict[str, dict[str, str]] | None = None
) -> list[tuple[str, str]]:
    """(queue, job id) of this load's jobs (and of `also`'s: the background load's ids) reported stalled on
    ma:events since `since_ms`."""
    ours = {
        (queue, job_id)
        for ids in (load.ids, also or {})
        for queue, by in ids.items()
        for job_id in by.values()
    }
    redis = stack.redis()
    try:
        entries = await redis.xrange("ma:events", min=f"{since_ms}-0")
    finally:
        await redis.aclose()
    found = [(f.get("queue", ""), f.get("jobId", "")) for _, f in entries if f.get("kind") == "stalled"]
    return [key for key in found if key in ours]


async def queues_with_jobs_active(stack: Stack, load: Load) -> tuple[set[str], set[str]]:
    """Queues with a job active that has stalled at most once (killing its process again stays well inside the
    CHAOS table's three allowed stalls: a job killed four times fails, which is not what the scenario tests):
    those where it is one of this load's (its tag in the job's data), and those with any. Under the background
    load nearly every queue has a job active, and most of them are the background's."""
    redis = stack.redis()
    try:
        ours, busy = set(), set()
        for q in POOL_PROGRAMS:
            for job_id in await redis.lrange(f"bull:{q}:active", 0, -1):
                stalls, data = await redis.hmget(f"bull:{q}:{job_id}", "stc", "data")
                if int(stalls or 0) < 2:
                    busy.add(q)
                    if load.tag in (data or ""):
                        ours.add(q)
        return ours, busy
    finally:
        await redis.aclose()


# -- scenarios ----------------------------------------------------------------------------------------------------
async def test_sigkill_a_random_worker_20_times_during_load(stack: Stack, bg: BackgroundLoad):
    load = await build_load(stack, tag())
    since_ms = int(time.time() * 1000)
    started = time.monotonic()
    producer = start_producer(stack, load, rate=3)  # the load spans the ~20 s of kills
    cli_enqueue(stack, load)
    rng, kills, kills_in_flight = random.Random(7), 0, 0
    # Jobs that take a while, as in production (identity answers in 0.5 s): a kill then finds work in flight.
    stack.identity.hook("POST", "/__latency", {"path": "/v1/", "seconds": 0.5})
    bg.fault_started()
    try:
        deadline = time.monotonic() + 120
        while kills < 20:
            assert time.monotonic() < deadline, f"only {kills} kills in 120 s: no pool process stayed up 4 s"
            eligible = [
                p
                for p in stack.pool_processes()
                if p["statename"] == "RUNNING" and p["now"] - p["start"] >= 4
            ]  # past startsecs
            if eligible:
                # A kill of an idle worker tests little: when some queue has a job active, kill one of its processes,
                # one with a job of this load first (its effects are the ones counted).
                ours, busy = await queues_with_jobs_active(stack, load)
                working = [p for p in eligible if p["group"] in ours] or [
                    p for p in eligible if p["group"] in busy
                ]
                victim = rng.choice(working or eligible)
                name = f"{victim['group']}:{victim['name']}"
                os.kill(victim["pid"], signal.SIGKILL)
                kills += 1
                kills_in_flight += bool(working)
                await wait_for(
                    lambda name=name, pid=victim["pid"]: stack.sup.pid(name) != pid,
                    timeout=10,
                    what=f"supervisord seeing {name} (pid {victim['pid']}) die",
                )
            await asyncio.sleep(1.0)  # pacing, the point: about one kill a second while the load arrives
    finally:
        stack.identity.hook("POST", "/__latency", {"path": "/v1/", "seconds": 0})
        bg.fault_ended()
    await bg.stop()  # once the backlog drained (or its limit): what follows waits for a finite backlog
    finish_producer(producer, load)
    figures = await verify(
        stack,
        load,
        "SIGKILL a random worker x20",
        started,
        extra={"kills": kills, "kills_with_a_job_active": kills_in_flight},
        bg=bg,
    )
    assert kills_in_flight > 0, "no kill found a queue with a job active"
    # The fault was hit: a killed process held one of this load's jobs (or, under the background load, one of its
    # jobs: they are most of what runs), its lock lapsed, and it was run again.
    stalled = await wait_for(
        lambda: stalls_of(stack, load, since_ms, also=bg.ids),
        timeout=30,
        what="a job of this load stalled by a kill",
    )
    counted = await stalls_of(stack, load, since_ms)
    record({**figures, "stalled_jobs": len(counted), "bg_stalled_jobs": len(stalled) - len(counted)})


async def test_rolling_restart_of_every_program_during_load(stack: Stack, bg: BackgroundLoad):
    load = await build_load(stack, tag())
    pids_before = {f"{p['group']}:{p['name']}": p["pid"] for p in stack.sup.processes()}
    since_ms = int(time.time() * 1000)
    started = time.monotonic()
    producer = start_producer(stack, load, rate=8)
    await wait_for(lambda: load_flowing(stack, load), timeout=FLOWING_S, what="the load being processed")
    restarted = 0
    bg.fault_started()
    for name in pids_before:
        await asyncio.to_thread(stack.sup.rpc.supervisor.stopProcess, name)  # SIGTERM: in-flight jobs finish
        await asyncio.to_thread(stack.sup.rpc.supervisor.startProcess, name)
        restarted += 1
    bg.fault_ended()
    pids_after = {f"{p['group']}:{p['name']}": p["pid"] for p in stack.sup.processes()}
    await bg.stop()
    finish_producer(producer, load)
    await verify(
        stack,
        load,
        "rolling SIGTERM restart of every program",
        started,
        extra={"restarted": restarted},
        bg=bg,
    )
    # The fault was hit: every program really went down and came back (a new pid each).
    assert all(pids_after[n] not in (0, pid) for n, pid in pids_before.items()), (pids_before, pids_after)
    # ...and SIGTERM let in-flight jobs finish: none of this load's jobs was left for the stall check to find.
    assert await stalls_of(stack, load, since_ms) == []


async def outage(
    stack: Stack,
    engine: engines.Engine,
    scenario: str,
    evidence: tuple[str, tuple[str, ...]],
    bg: BackgroundLoad,
) -> None:
    """Stop an engine for 15 s under load, start it again; processing must resume within 30 s, and the pools
    must have met the outage (`evidence`: the ma:stats counter it moves, and its scopes)."""
    counter, scopes = evidence
    load = await build_load(stack, tag())
    before = await pool_counter(stack, counter, scopes)
    started = time.monotonic()
    producer = start_producer(stack, load, rate=6)
    await wait_for(lambda: load_flowing(stack, load), timeout=FLOWING_S, what="the load being processed")
    bg.fault_started()
    engine.stop()  # Valkey: SIGTERM, it writes its AOF and exits; PostgreSQL: fast shutdown
    await asyncio.sleep(15)  # the outage's length is the point
    engine.start()
    bg.fault_ended()
    back_ms = int(time.time() * 1000)
    await bg.stop()
    finish_producer(producer, load)
    await drain(stack, load)
    recovery = await first_completion_after(stack, load, back_ms)
    figures = await verify(stack, load, scenario, started, recovery_s=recovery, bg=bg)
    assert recovery is not None and recovery <= 30, figures
    await counter_moved(stack, counter, before, f"{scenario}: ma:stats {counter} moved by the outage", scopes)


async def test_valkey_stopped_15s_with_persistence_then_restarted(stack: Stack, bg: BackgroundLoad):
    # Each pool process counts its first failed Redis check of an outage in ma:stats:redis.
    await outage(stack, stack.valkey, "Valkey stopped 15 s (AOF on)", ("connection_failures", ("redis",)), bg)


async def test_postgres_stopped_15s_then_restarted(stack: Stack, bg: BackgroundLoad):
    # Jobs that met the outage (the tasks database, or identity's over its own) failed transiently and were retried.
    await outage(stack, stack.pg, "PostgreSQL stopped 15 s", ("retries", POOL_PROGRAMS), bg)


async def test_identity_answers_429_for_60s(stack: Stack, bg: BackgroundLoad):
    load = await build_load(stack, tag())
    throttled_before = await pool_counter(stack, "throttled")
    answered_before = stack.identity.stats().get("fault 429", 0)
    started = time.monotonic()
    bg.fault_started()
    stack.identity.hook("POST", "/__faults", {"status": 429, "seconds": 60, "path": "/v1/", "retryAfter": 5})
    producer = start_producer(stack, load, rate=4)
    await asyncio.sleep(60)  # the fault's length is the point (it ends by itself after 60 s)
    bg.fault_ended()
    back_ms = int(time.time() * 1000)
    await bg.stop()
    finish_producer(producer, load)
    await drain(stack, load)
    recovery = await first_completion_after(stack, load, back_ms)
    answered = stack.identity.stats().get("fault 429", 0) - answered_before
    throttled = await counter_moved(stack, "throttled", throttled_before, "jobs deferred by the 429s")
    await verify(
        stack,
        load,
        "identity 429 for 60 s",
        started,
        recovery_s=recovery,
        extra={"throttled": throttled, "identity_429s": answered},
        bg=bg,
    )
    assert answered > 0, "identity answered no 429: the fault never met the load"


async def test_identity_answers_401_for_20s(stack: Stack, bg: BackgroundLoad):
    load = await build_load(stack, tag())
    before = stack.identity.stats()
    retries_before = await pool_counter(stack, "retries")
    started = time.monotonic()
    bg.fault_started()
    stack.identity.hook("POST", "/__faults", {"status": 401, "seconds": 20, "path": "/v1/"})
    producer = start_producer(stack, load, rate=6)
    await asyncio.sleep(20)  # the fault's length is the point (it ends by itself after 20 s)
    bg.fault_ended()
    back_ms = int(time.time() * 1000)
    await bg.stop()
    finish_producer(producer, load)
    await drain(stack, load)
    after = stack.identity.stats()
    refused = after.get("fault 401", 0) - before.get("fault 401", 0)
    refreshes = after.get("POST /v1/auth/refresh", 0) - before.get("POST /v1/auth/refresh", 0)
    await verify(
        stack,
        load,
        "identity 401 (expired tokens) for 20 s",
        started,
        recovery_s=await first_completion_after(stack, load, back_ms),
        extra={"identity_401s": refused, "token_refreshes": refreshes},
        bg=bg,
    )
    assert refused > 0, "identity answered no 401: the fault never met the load"
    # A token still refused after its refresh is a transient failure: those jobs were retried, not failed.
    await counter_moved(stack, "retries", retries_before, "jobs retried after their token was refused")


async def test_stripe_answers_5xx_for_30s(stack: Stack, bg: BackgroundLoad):
    load = await build_load(stack, tag())
    answered_before = stack.stripe.stats().get("fault 503", 0)
    retries_before = await pool_counter(stack, "retries", ("billing-invoice",))
    started = time.monotonic()
    bg.fault_started()
    stack.stripe.hook("POST", "/__faults", {"status": 503, "seconds": 30, "path": "/v1/"})
    producer = start_producer(stack, load, rate=6)
    await asyncio.sleep(30)  # the fault's length is the point (it ends by itself after 30 s)
    bg.fault_ended()
    await bg.stop()
    finish_producer(producer, load)
    answered = stack.stripe.stats().get("fault 503", 0) - answered_before
    await verify(stack, load, "Stripe 5xx for 30 s", started, extra={"faults": answered}, bg=bg)
    assert answered > 0, "Stripe answered no 503: the fault never met the load"
    # The charges met the 503s (after the Stripe client's own retry) and their invoice jobs were retried.
    await counter_moved(
        stack, "retries", retries_before, "invoice jobs retried after Stripe's 503s", ("billing-invoice",)
    )


# -- outages of minutes ------------------------------------------------------------------------------------------
# Each downstream unavailable for 5 minutes under a steady load that starts before and ends after it: nothing fails
# for good (the queue table's retries ride out 15 minutes, tests/test_config.py), no attempt is burned on a throttle,
# every effect happens once and the backlog drains. About 8 minutes each.
OUTAGE_S = 300.0


def log_offsets(stack: Stack) -> dict[Path, int]:
    return {log: log.stat().st_size for log in (stack.sup.home / "var" / "log").glob("*.log")}


def attempts_burned_on_a_throttle(stack: Stack, since: dict[Path, int]) -> list[str]:
    """Retry or failure lines written since `since` whose reason is a 429: each is an attempt a throttle burned
    (a throttle must defer the job instead, leaving its attempts alone)."""
    burned = []
    for log in (stack.sup.home / "var" / "log").glob("*.log"):
        with log.open("rb") as f:
            f.seek(since.get(log, 0))
            text = f.read().decode(errors="replace")
        for line in text.splitlines():
            _, retried, reason = line.partition(" will retry: ")
            if not retried:
                _, _, reason = line.partition(" failed: ")
            if "429" in reason or "Throttled" in reason:
                burned.append(line)
    return burned


async def ride_out(
    stack: Stack, scenario: str, outage: Any, end: Any, scopes: tuple[str, ...]
) -> dict[str, Any]:
    """`outage()` runs for OUTAGE_S under a load spanning it, then `end()`; the invariants, the retries the
    outage caused in `scopes` (evidence it met the load) and the drain after it."""
    load = await build_load(stack, tag(), scale=3)
    since = log_offsets(stack)
    retries_before = await pool_counter(stack, "retries", scopes)
    throttled_before = await pool_counter(stack, "throttled")
    started = time.monotonic()
    # About 10 s of load before the outage, then the outage, then about 100 s of load after it.
    producer = start_producer(stack, load, rate=len(load.jobs) / (OUTAGE_S + 120))
    await wait_for(lambda: load_flowing(stack, load), timeout=60, what="the load being processed")
    await outage()
    await end()
    back_ms = int(time.time() * 1000)
    back = time.monotonic()
    finish_producer(producer, load, timeout=600)
    await drain(stack, load, timeout=600)
    drained_s = round(time.monotonic() - back, 1)
    burned = attempts_burned_on_a_throttle(stack, since)
    figures = await verify(
        stack,
        load,
        scenario,
        started,
        recovery_s=await first_completion_after(stack, load, back_ms),
        extra={
            "outage_s": OUTAGE_S,
            "drained_after_s": drained_s,
            "attempts_burned_on_a_throttle": len(burned),
            "throttled": await pool_counter(stack, "throttled") - throttled_before,
        },
    )
    assert burned == [], burned[:5]
    retries = await counter_moved(stack, "retries", retries_before, f"{scenario}: jobs retried", scopes)
    figures = {**figures, "retries": retries, "longest_job_s": await longest_job_s(stack, load)}
    record(figures)  # longest_job_s: a figure for bench/REPORT.md (about the outage plus one capped wait)
    return figures


async def longest_job_s(stack: Stack, load: Load) -> float:
    """The longest any job of the load took from being added to finishing (its waits included)."""
    redis = stack.redis()
    try:
        longest = 0
        for queue, ids in load.ids.items():
            for job_id in ids.values():
                added, finished = await redis.hmget(f"bull:{queue}:{job_id}", "timestamp", "finishedOn")
                if added and finished:
                    longest = max(longest, int(finished) - int(added))
        return longest / 1000
    finally:
        await redis.aclose()


@pytest.mark.timeout(1500)
@pytest.mark.outage  # 7 minutes each: bench/report.py runs them (-m outage), CI runs the rest of the chaos suite
async def test_identity_unavailable_5_minutes_answering_503_and_429_mixed(stack: Stack):
    before = stack.identity.stats()

    async def outage() -> None:
        # 25 s of 503 then 5 s of 429 (Retry-After 5), ten times: a struggling service that also sheds load.
        deadline = time.monotonic() + OUTAGE_S
        while (left := deadline - time.monotonic()) > 0:
            stack.identity.hook(
                "POST", "/__faults", {"status": 503, "seconds": min(25, left), "path": "/v1/"}
            )
            await asyncio.sleep(min(25, left))  # the fault's length is the point
            if (left := deadline - time.monotonic()) > 0:
                fault = {"status": 429, "seconds": min(5, left), "path": "/v1/", "retryAfter": 5}
                stack.identity.hook("POST", "/__faults", fault)
                await asyncio.sleep(min(5, left))

    after: dict[str, int] = {}

    async def ended() -> None:  # the last slice has ended by itself
        after.update(stack.identity.stats())

    figures = await ride_out(stack, "identity unavailable 5 min (503 and 429)", outage, ended, POOL_PROGRAMS)
    answered = {s: after.get(f"fault {s}", 0) - before.get(f"fault {s}", 0) for s in (503, 429)}
    record({**figures, "identity_503s": answered[503], "identity_429s": answered[429]})
    assert answered[503] > 0 and answered[429] > 0, answered
    assert figures["throttled"] > 0, "no job was deferred by a 429: the mix never met the load"


@pytest.mark.timeout(1500)
@pytest.mark.outage  # 7 minutes each: bench/report.py runs them (-m outage), CI runs the rest of the chaos suite
async def test_postgres_stopped_5_minutes_then_restarted(stack: Stack):
    async def outage() -> None:
        stack.pg.stop()
        await asyncio.sleep(OUTAGE_S)  # the outage's length is the point

    async def end() -> None:
        stack.pg.start()

    await ride_out(stack, "PostgreSQL stopped 5 min", outage, end, POOL_PROGRAMS)


@pytest.mark.timeout(1500)
@pytest.mark.outage  # 7 minutes each: bench/report.py runs them (-m outage), CI runs the rest of the chaos suite
async def test_stripe_stopped_5_minutes_then_restarted(stack: Stack):
    async def outage() -> None:
        stack.stripe.stop()  # connections refused; its objects are kept in its state file
        await asyncio.sleep(OUTAGE_S)  # the outage's length is the point

    async def end() -> None:
        stack.stripe.start()

    await ride_out(stack, "Stripe stopped 5 min", outage, end, ("billing-invoice",))


# -- fuzzing ------------------------------------------------------------------------------------------------------
HUGE = "<huge>"


def _huge(value: Any) -> Any:
    """The marker becomes a 100 KB string here (hypothesis would print it on every draw)."""
    if value == HUGE:
        return "é" * 100_000
    if isinstance(value, dict):
        return {k: _huge(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_huge(v) for v in value]
    return value


def fuzz_payloads(count: int, seed: int) -> list[tuple[str, str, Any]]:
    """(queue, job name, data) across every job name: valid-looking and wrong values, missing fields, huge
    strings, wrong types, unknown names. Ids are random, so nothing real is touched by those that validate."""
    from hypothesis import strategies as st
    from hypothesis.errors import NonInteractiveExampleWarning

    from pool.queue_table import QUEUES

    names = [(q, n) for q, spec in QUEUES.items() for n in spec.handlers] + [
        ("identity-events", "no.such.job")
    ]
    scalar = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=30),
        st.text(alphabet="abc_0123", min_size=1, max_size=12).map(lambda s: f"x_{s}"),
        st.sampled_from(["2024-08-01T00:00:00Z", "daily", "users", "csv", "not-a-date", "", " "]),
        st.just(HUGE),
    )
    value = st.recursive(
        scalar,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=6,
    )
    keys = st.sampled_from(
        [
            "organizationId",
            "tenantId",
            "taskId",
            "assigneeId",
            "assignedBy",
            "assignedAt",
            "email",
            "invitationId",
            "role",
            "invitedBy",
            "bulkJobId",
            "actorId",
            "target",
            "ids",
            "filter",
            "reason",
            "format",
            "subscriptionId",
            "periodStart",
            "periodEnd",
            "resolution",
            "features",
            "stripeEventId",
            "type",
            "payload",
            "signature",
            "invoiceId",
            "olderThanDays",
            "windowMinutes",
            "unexpected",
        ]
    )
    payload = st.one_of(st.dictionaries(keys, value, max_size=10), value)
    rng = random.Random(seed)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonInteractiveExampleWarning)
        pool = [payload.example() for _ in range(500)]  # example() is slow-ish: draw a pool, mix from it
    for _ in range(count):
        queue, name = rng.choice(names)
        data = rng.choice(pool)
        if isinstance(data, dict) and rng.random() < 0.5:  # mix in a second draw: more fields per payload
            other = rng.choice(pool)
            data = {**data, **other} if isinstance(other, dict) else data
        if isinstance(data, dict) and data.get("actorId") == "user_root":
            data["actorId"] = "x_not_root"
        out.append((queue, name, _huge(data)))
    return out


async def test_10000_fuzzed_payloads_each_end_with_a_reason_and_the_pool_survives(
    stack: Stack, bg: BackgroundLoad
):
    from bullmq import Queue

    started = time.monotonic()
    payloads = fuzz_payloads(10_000, seed=11)
    # The test's own producer: batches of 500 payloads, some of 100 KB strings, are megabytes per write; with the
    # background load on a busy machine one took longer than 10 s to write (the pool's timeouts are not this one).
    redis = stack.redis(timeout=60)
    ids: dict[str, dict[str, str]] = {}
    bg.fault_started()
    try:
        by_queue: dict[str, list[tuple[str, Any]]] = {}
        for queue, name, data in payloads:
            by_queue.setdefault(queue, []).append((name, data))
        for queue, jobs in by_queue.items():
            q = Queue(queue, {"connection": redis})
            for at in range(0, len(jobs), 500):
                added = await q.addBulk(
                    [
                        {"name": n, "data": d, "opts": {"attempts": 2, "backoff": 100}}
                        for n, d in jobs[at : at + 500]
                    ]
                )
                ids.setdefault(queue, {}).update({job.id: job.id for job in added})
        # A foreign producer writing non-JSON data (Node bullmq always writes JSON; this one does not).
        q = Queue("identity-events", {"connection": redis})
        for i in range(20):
            job = await q.add("organization.created", {"organizationId": f"x_{i}"}, {"delay": 3000})
            await redis.hset(
                f"bull:identity-events:{job.id}", "data", f"organizationId=x_{i}&garbage=\x00\x01"
            )
            ids["identity-events"][job.id] = job.id
    finally:
        await redis.aclose()
    bg.fault_ended()
    await bg.stop()
    load = Load("fuzz", ids=ids)
    states = await drain(stack, load, timeout=400)
    flat = [(q, *row) for q, rows in states.items() for row in rows]
    fatal = [f"{p['group']}:{p['name']}" for p in stack.sup.processes() if p["statename"] != "RUNNING"]
    figures = {
        "scenario": "10,000 fuzzed payloads + 20 non-JSON",
        "jobs_in": len(flat),
        "completed": sum(1 for *_, s, _ in flat if s == "completed"),
        "failed_with_reason": sum(1 for *_, s, r in flat if s == "failed" and r),
        "failed_without_reason": sum(1 for *_, s, r in flat if s == "failed" and not r),
        "lost": sum(1 for *_, s, _ in flat if s in ("lost", "pending")),
        "duplicated": 0,
        "missing_effects": 0,
        "fatal": len(fatal),
        "secrets_in_logs": len(secrets_in_logs(stack)),
        "recovery_s": None,
        "elapsed_s": round(time.monotonic() - started, 1),
        **await background_figures(stack, bg),
    }
    record(figures)
    assert figures["lost"] == 0 and figures["failed_without_reason"] == 0, figures
    assert not bg.lost and not bg.failed, (bg.lost[:10], bg.failed[:10])
    assert not fatal and figures["secrets_in_logs"] == 0, (fatal, secrets_in_logs(stack))
    reasons = [r for *_, s, r in flat if s == "failed"]
    assert sum("not valid JSON" in r for r in reasons) == 20
    assert all(len(r) < 2000 for r in reasons), "reasons stay short even for 100 KB inputs"
