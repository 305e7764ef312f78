"""Real engines for the whole session: Valkey and PostgreSQL from the embedded wheels, on free ports."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from devstack import databases, engines

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NODE_DIR = ROOT / "tests" / "node"


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


def pool_env(redis_url: str, urls: databases.DatabaseUrls, **extra: str) -> dict[str, str]:
    """The environment a pool process gets: runbook variables plus the test queue table."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MA_", "SUPERVISOR_"))}
    env.update(
        REDIS_URL=redis_url,
        DATABASE_URL=urls.identity_ro,
        TASKS_DATABASE_URL=urls.tasks,
        IDENTITY_BASE_URL="http://127.0.0.1:9",
        SUPABASE_SERVICE_ROLE_KEY="test-service-role-key-very-secret",
        MA_QUEUE_TABLE="tests.support.table:QUEUES",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


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


async def wait_for(
    check: Callable[[], Any], *, timeout: float = 20.0, what: str = "condition", every: float = 0.1
) -> Any:
    """Poll an (async or sync) check until it returns something truthy; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="session")
def node_bullmq() -> Path:
    """npm `bullmq` 6 + ioredis, installed once (CI installs them in .ci/run; this makes a bare run work too)."""
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH: the interop tests need Node 20 and npm")
    if not (NODE_DIR / "node_modules" / "bullmq").exists():
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, capture_output=True
        )
    return NODE_DIR


class PoolProcess:
    """`ma-worker run QUEUE` as a real child process, its output kept for assertions."""

    def __init__(self, queue: str, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.out = open(log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(BIN / "ma-worker"), "run", queue],
            env=env,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()
        return self.proc.returncode


@pytest.fixture
def start_pool(valkey: engines.Engine, db_urls: databases.DatabaseUrls, tmp_path: Path) -> Iterator[Any]:
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


SERVICE_KEY = "test-service-role-key-very-secret"


class ServiceDouble:
    """A double as a real HTTP server (a subprocess of ours), with its test hooks (`/__stats`, `/__faults`, ...)."""

    def __init__(self, module: str, args: list[str], log: Path, ready_path: str) -> None:
        import httpx

        self.port = engines.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = open(log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(BIN / "python"), "-m", module, "--port", str(self.port), *args],
            stdout=self.out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(self.url + ready_path, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)

    def hook(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import httpx

        return httpx.request(method, self.url + path, json=body, timeout=5).json()

    def stats(self) -> dict[str, int]:
        return self.hook("GET", "/__stats")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.close()


class IdentityDouble(ServiceDouble):
    """The identity double (devstack/identity_double.py) over the identity database."""

    def __init__(self, admin_url: str, log: Path, token_ttl: float = 300) -> None:
        super().__init__(
            "devstack.identity_double",
            ["--database-url", admin_url, "--service-key", SERVICE_KEY, "--token-ttl", str(token_ttl)],
            log,
            "/healthz",
        )

    def fault(self, status: int | str, count: int = 1, path: str = "", retry_after: float = 1) -> None:
        self.hook(
            "POST", "/__faults", {"status": status, "count": count, "path": path, "retryAfter": retry_after}
        )


@pytest.fixture(scope="session")
def identity_double(db_urls: databases.DatabaseUrls, state_dir: Path) -> Iterator[IdentityDouble]:
    double = IdentityDouble(db_urls.admin, state_dir / "identity-double.log")
    yield double
    double.stop()


@pytest.fixture
def identity(identity_double: IdentityDouble) -> IdentityDouble:
    identity_double.hook("POST", "/__reset")
    return identity_double


class StripeDouble(ServiceDouble):
    """The Stripe double (localstripe + fault hooks, devstack/stripe_double.py)."""

    SECRET_KEY = "sk_test_billing_secret_4242"
    WEBHOOK_SECRET = "whsec_test_webhook_secret"

    def __init__(self, log: Path) -> None:
        super().__init__("devstack.stripe_double", [], log, "/__stats")

    def env(self) -> dict[str, str]:
        return {
            "STRIPE_SECRET_KEY": self.SECRET_KEY,
            "STRIPE_API_BASE": self.url,
            "STRIPE_WEBHOOK_SECRET": self.WEBHOOK_SECRET,
            "MA_STRIPE_NETWORK_RETRIES": "1",
        }


@pytest.fixture(scope="session")
def stripe_double(state_dir: Path) -> Iterator[StripeDouble]:
    double = StripeDouble(state_dir / "stripe-double.log")
    yield double
    double.stop()


@pytest.fixture
def stripe(stripe_double: StripeDouble) -> StripeDouble:
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


async def settle(redis: Any, queue: str, job_id: str, *, timeout: float = 30) -> Any:
    """Wait until a job is completed or failed; return it (as bullmq reads it)."""
    from bullmq import Job, Queue

    q = Queue(queue, {"connection": redis})

    async def done() -> bool:
        return await q.getJobState(job_id) in ("completed", "failed")

    await wait_for(done, timeout=timeout, what=f"{queue} job {job_id} to settle")
    return await Job.fromId(q, job_id)


async def run_job(redis: Any, queue: str, name: str, data: Any, *, timeout: float = 30, **opts: Any) -> Any:
    from bullmq import Queue

    job = await Queue(queue, {"connection": redis}).add(name, data, opts)
    return await settle(redis, queue, job.id, timeout=timeout)
