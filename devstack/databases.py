"""Create, migrate and seed the identity and tasks databases on a PostgreSQL server."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from devstack import seed
from pool import migrations

WORKER_RO_ROLE = "ma_worker_ro"


@dataclass(frozen=True)
class DatabaseUrls:
    admin: str
    """The identity service's own access (the doubles and the seed use it)."""
    identity_ro: str
    """DATABASE_URL for the worker: a role whose transactions are read-only."""
    tasks: str
    """TASKS_DATABASE_URL."""


def with_database(url: str, database: str, user: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if user is not None:
        netloc = f"{user}@{netloc.rpartition('@')[2]}"
    return urlunsplit((parts.scheme, netloc, f"/{database}", parts.query, ""))


async def _create_database(server_url: str, name: str) -> bool:
    conn = await asyncpg.connect(with_database(server_url, "postgres"))
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        await conn.execute(f'CREATE DATABASE "{name}"')
        return True
    finally:
        await conn.close()


async def _bootstrap(server_url: str, identity: str, tasks: str) -> DatabaseUrls:
    admin_url = with_database(server_url, identity)
    if await _create_database(server_url, identity):
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute((Path(__file__).parent / "identity_schema.sql").read_text())
            await conn.execute(f"""
                DO $$ BEGIN
                    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{WORKER_RO_ROLE}') THEN
                        CREATE ROLE {WORKER_RO_ROLE} LOGIN;
                    END IF;
                END $$;
                ALTER ROLE {WORKER_RO_ROLE} SET default_transaction_read_only = on;
                GRANT CONNECT ON DATABASE "{identity}" TO {WORKER_RO_ROLE};
                GRANT USAGE ON SCHEMA public TO {WORKER_RO_ROLE};
                GRANT SELECT ON ALL TABLES IN SCHEMA public TO {WORKER_RO_ROLE};
            """)
            await seed.seed_identity(conn)
        finally:
            await conn.close()
    tasks_url = with_database(server_url, tasks)
    created_tasks = await _create_database(server_url, tasks)
    await asyncio.to_thread(migrations.upgrade, tasks_url)
    if created_tasks:
        conn = await asyncpg.connect(tasks_url)
        try:
            await seed.seed_tasks(conn)
        finally:
            await conn.close()
    return DatabaseUrls(admin_url, with_database(server_url, identity, WORKER_RO_ROLE), tasks_url)


def bootstrap(server_url: str, identity: str = "identity", tasks: str = "tasks") -> DatabaseUrls:
    """Idempotent: existing databases are migrated, not re-seeded."""
    return asyncio.run(_bootstrap(server_url, identity, tasks))
