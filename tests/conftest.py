"""Fixtures only: real engines for the whole session (Valkey and PostgreSQL from the embedded wheels, on free
ports), the service doubles, pool processes. The helpers they use live in tests/support/ by role."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from devstack import databases, engines
from devstack.s3_server import S3Server
from tests.support.doubles import IdentityDouble, StripeDouble
from tests.support.exporter import Exporter
from tests.support.node import install_node_bullmq
from tests.support.processes import PoolProcess, pool_env


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="session")
def valkey(state_dir: Path) -> Iterator[engines.Engine]:
    engine = engines.valkey(state_dir / "valkey").start()
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def pg(state_dir: Path) -> Iterator[engines.Engine]:
    engine = engines.postgres(state_dir / "pg" / "data", fast=True).start()
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def db_urls(pg: engines.Engine) -> databases.DatabaseUrls:
    urls = databases.bootstrap(pg.url)

    async def create_test_tables() -> None:
        conn = await asyncpg.connect(urls.tasks)
        await conn.execute("""
            CREATE TABLE IF NOT EXISTS test_effects (key text PRIMARY KEY, at timestamptz DEFAULT now());
            CREATE TABLE IF NOT EXISTS test_attempts (key text, pid int, attempt int, at timestamptz DEFAULT now());
        """)
        await conn.close()

    asyncio.run(create_test_tables())
    return urls


@pytest.fixture
async def redis(valkey: engines.Engine) -> Any:
    client = Redis.from_url(valkey.url, decode_responses=True)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
async def tasks_db(db_urls: databases.DatabaseUrls) -> Any:
    conn = await asyncpg.connect(db_urls.tasks)
    await conn.execute("TRUNCATE test_effects, test_attempts")
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
def node_bullmq() -> Path:
    """npm `bullmq` 6 + ioredis, installed once."""
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH: the interop tests need Node 20 and npm")
    return install_node_bullmq()


@pytest.fixture
def start_pool(valkey: engines.Engine, db_urls: databases.DatabaseUrls, tmp_path: Path) -> Iterator[Any]:
    """Start `ma-worker run QUEUE` processes (test queue table by default); all are stopped after the test."""
    started: list[PoolProcess] = []

    def start(queue: str = "identity-events", **extra: str) -> PoolProcess:
        proc = PoolProcess(
            queue, pool_env(valkey.url, db_urls, **extra), tmp_path / f"pool-{len(started)}.log"
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def identity_double(db_urls: databases.DatabaseUrls, state_dir: Path) -> Iterator[IdentityDouble]:
    double = IdentityDouble(db_urls.admin, state_dir / "identity-double.log")
    yield double
    double.stop()


@pytest.fixture
def identity(identity_double: IdentityDouble) -> IdentityDouble:
    """The session's identity double, its faults, limits, latency and counters reset for this test."""
    identity_double.hook("POST", "/__reset")
    return identity_double


@pytest.fixture(scope="session")
def stripe_double(state_dir: Path) -> Iterator[StripeDouble]:
    double = StripeDouble(state_dir / "stripe-double.log")
    yield double
    double.stop()


@pytest.fixture
def stripe(stripe_double: StripeDouble) -> StripeDouble:
    """The session's Stripe double, its faults and counters reset for this test."""
    stripe_double.hook("POST", "/__reset")
    return stripe_double


@pytest.fixture
async def identity_db(db_urls: databases.DatabaseUrls) -> Any:
    """The identity service's own access to its database (tests play the identity service)."""
    conn = await asyncpg.connect(db_urls.admin)
    yield conn
    await conn.close()


@pytest.fixture
def start_real_pool(start_pool: Any, identity: IdentityDouble) -> Any:
    """A pool process with the real queue table and handlers, talking to the identity double."""

    def start(queue: str, **extra: str) -> PoolProcess:
        return start_pool(
            queue, MA_QUEUE_TABLE="pool.queue_table:QUEUES", IDENTITY_BASE_URL=identity.url, **extra
        )

    return start


@pytest.fixture
def exporter(valkey: engines.Engine, tmp_path: Path) -> Iterator[Any]:
    """Start `ma-worker exporter` processes (over the session's Valkey unless given a URL); stopped after the test."""
    started: list[Exporter] = []

    def start(url: str | None = None, **env: str) -> Exporter:
        e = Exporter(url or valkey.url, tmp_path / f"exporter-{len(started)}.log", **env)
        started.append(e)
        return e

    yield start
    for e in started:
        e.stop()


@pytest.fixture(scope="session")
def s3_server(state_dir: Path) -> Iterator[S3Server]:
    """A real S3-compatible server (moto's server mode, as `ma-worker dev` runs it) with the dev bucket."""
    server = S3Server(state_dir / "s3.log").start()
    server.create_bucket()
    yield server
    server.stop()
