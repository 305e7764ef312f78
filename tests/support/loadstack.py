"""The whole stack for load runs (bench/capacity.py, bench/soak.py, tests/test_soak.py): PostgreSQL, Valkey, the
identity and Stripe doubles, and every program of supervisord.conf with the real queue table and its default
process counts; plus what a load run measures on it (backlog, finished counts, paused adds)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bullmq import Job, Queue
from redis.asyncio import Redis

from devstack import databases, engines
from pool.contracts import bull_key
from pool.queue_table import QUEUES
from pool.supervise import supervisord_env
from tests.support.doubles import IdentityDouble, StripeDouble
from tests.support.mix import Mix
from tests.support.processes import pool_env
from tests.support.supervisord import Supervisord

BACKLOG_STATES = ("wait", "paused", "prioritized", "delayed", "active")


@dataclass
class LoadStack:
    home: Path
    pg: engines.Engine
    valkey: engines.Engine
    urls: databases.DatabaseUrls
    identity: IdentityDouble
    stripe: StripeDouble
    sup: Supervisord
    exporter_port: int

    def redis(self) -> Redis:
        return Redis.from_url(self.valkey.url, decode_responses=True, socket_timeout=30)


@contextmanager
def load_stack(home: Path, **env: str) -> Iterator[LoadStack]:
    """Every engine, double and supervisord program up (the real queue table); all stopped on exit."""
    home.mkdir(parents=True, exist_ok=True)
    pg = engines.postgres(home / "pg" / "data", fast=True).start()
    valkey = engines.valkey(home / "valkey", persistent=False).start()
    started: list[Any] = [pg, valkey]
    try:
        urls = databases.bootstrap(pg.url)
        identity = IdentityDouble(urls.admin, home / "identity-double.log")
        started.append(identity)
        stripe = StripeDouble(home / "stripe-double.log")
        started.append(stripe)
        port = engines.free_port()
        full_env = pool_env(
            valkey.url,
            urls,
            MA_QUEUE_TABLE="pool.queue_table:QUEUES",
            IDENTITY_BASE_URL=identity.url,
            MA_INVOICE_DIR=str(home / "invoices"),
            MA_EXPORT_DIR=str(home / "exports"),
            MA_EXPORTER_PORT=str(port),
            **stripe.env(),
            **env,
        )
        (home / "host").mkdir(exist_ok=True)
        sup = Supervisord(home / "host", supervisord_env(full_env))
        started.append(sup)
        sup.wait_all_running(timeout=60)
        yield LoadStack(home, pg, valkey, urls, identity, stripe, sup, port)
    finally:
        for thing in reversed(started):
            thing.stop()


async def backlog(redis: Redis) -> dict[str, int]:
    """queue -> jobs not finished yet (waiting, paused, prioritized, active, and delayed ones due within a minute:
    retries); a job scheduler's next run (a delayed `repeat:` job, always there) and an invoice's renewal next
    month are not backlog."""
    due = (
        int(time.time() * 1000) + 60_000
    ) * 4096  # BullMQ scores a delayed job by its due time (ms) * 0x1000
    async with redis.pipeline(transaction=False) as pipe:
        for q in QUEUES:
            for state in BACKLOG_STATES:
                key = bull_key(q, state)
                if state in ("wait", "paused", "active"):
                    pipe.llen(key)
                elif state == "delayed":
                    pipe.zrangebyscore(key, "-inf", due)
                else:
                    pipe.zcard(key)
        counts = await pipe.execute()
    counts = [sum(1 for i in c if not i.startswith("repeat:")) if isinstance(c, list) else c for c in counts]
    per = len(BACKLOG_STATES)
    return {q: sum(counts[i * per : (i + 1) * per]) for i, q in enumerate(QUEUES)}


async def add_jobs(redis: Redis, jobs: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Add jobs with bullmq's own addBulk, per queue; queue -> ids."""
    by_queue: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        by_queue.setdefault(job["queue"], []).append(job)
    ids: dict[str, list[str]] = {}
    for queue, items in by_queue.items():
        q = Queue(queue, {"connection": redis})
        for at in range(0, len(items), 500):
            added = await q.addBulk(
                [
                    {"name": j["name"], "data": j["data"], "opts": j.get("opts") or {}}
                    for j in items[at : at + 500]
                ]
            )
            ids.setdefault(queue, []).extend(str(a.id) for a in added)
    return ids


async def paid_invoice(redis_url: str, admin_url: str, mix: Mix, timeout: float = 120) -> tuple[str, str]:
    """Run one invoice.generate through the pool: (invoice id, payment intent id), for the mix's payment jobs."""
    job = mix.job("invoice.generate")
    await mix.insert_rows(admin_url)
    redis = Redis.from_url(redis_url, decode_responses=True, socket_timeout=30)
    try:
        q = Queue(job["queue"], {"connection": redis})
        added = await q.add(job["name"], job["data"], {"removeOnComplete": False})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await q.getJobState(added.id) in ("completed", "failed"):
                break
            await asyncio.sleep(0.5)  # the poll interval of a loop bounded by `deadline`
        done = await Job.fromId(q, added.id)
        assert done and done.returnvalue, f"invoice.generate did not complete: {done and done.failedReason}"
        return done.returnvalue["invoiceId"], done.returnvalue["paymentIntentId"]
    finally:
        await redis.aclose()


def cpu_seconds(stack: LoadStack) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each part of the stack: each supervisord program (its
    processes summed: `billing-usage`, ..., `exporter`), `identity double`, `stripe double`, `postgres` (the
    postmaster, its live backends, and the backends it has reaped) and `valkey`. Differences of two calls give
    where a stretch of load went; a process restarted in between makes its program's difference wrong."""
    import psutil

    def own(proc: psutil.Process) -> float:
        t = proc.cpu_times()
        return t.user + t.system

    def tree(pid: int) -> float:
        root = psutil.Process(pid)
        t = root.cpu_times()
        total = own(root) + t.children_user + t.children_system
        for child in root.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += own(child)
        return total

    out: dict[str, float] = {}
    for p in stack.sup.processes():
        if p["pid"]:
            with contextlib.suppress(psutil.NoSuchProcess):
                out[p["group"]] = out.get(p["group"], 0.0) + own(psutil.Process(p["pid"]))
    for name, proc in (
        ("identity double", stack.identity.proc),
        ("stripe double", stack.stripe.proc),
        ("postgres", stack.pg.proc),
        ("valkey", stack.valkey.proc),
    ):
        if proc is not None:
            out[name] = tree(proc.pid)
    return out
