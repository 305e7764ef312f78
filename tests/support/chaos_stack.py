"""The chaos suite's stack: PostgreSQL and Valkey, the identity and Stripe doubles and the whole pool under
supervisord (`Stack`, one per test module: the `stack` fixture is module-scoped), the background load's fixtures
(`mix`, `bg`; tests/support/chaos.py) and the pool's `ma:stats` counters a scenario reads as evidence that its
fault met the load. Import the fixtures a test module uses (`bg` needs `mix` and `stack` beside it)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from devstack import databases, engines
from pool.supervise import supervisord_env
from tests.support.chaos import BEFORE_S, KEEP, LOAD_RATE, BackgroundLoad
from tests.support.doubles import IdentityDouble, StripeDouble
from tests.support.loadstack import paid_invoice
from tests.support.mix import Mix
from tests.support.processes import pool_env
from tests.support.supervisord import Supervisord
from tests.support.waits import wait_for

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
