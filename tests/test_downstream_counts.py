"""Counting each request to a downstream where it is made (pool/downstream.py), against the real engines: the
databases' statements and errors through SQLAlchemy's events, HTTP answers and refused connections through the
transport, written to real Valkey by the telemetry's pipeline and read back by the collector; old minutes
trimmed by the writers."""

from __future__ import annotations

import socket

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError

from pool.contracts import downstream_field, downstream_key
from pool.downstream import DownstreamCounts, http_client, watch_engine
from pool.monitor.collector import Collector
from pool.runtime import make_engine

T = 1_795_000_000.0


class Clock:
    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


async def flush(redis, counts: DownstreamCounts) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        written = counts.write(pipe)
        await pipe.execute()
    counts.written(written)


async def read(redis, name: str):
    snapshot = await Collector(redis, []).fetch()
    return next(d for d in snapshot.downstreams if d.name == name)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_statements_query_errors_timeouts_and_refused_connections_of_postgres_are_counted(
    redis, db_urls
):
    counts = DownstreamCounts()
    engine = make_engine(db_urls.tasks)
    watch_engine(engine, counts)
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT 1"))).scalar() == 1
        await conn.execute(text("SELECT 2"))
    async with engine.connect() as conn:
        with pytest.raises(DBAPIError):
            await conn.execute(text("SELECT * FROM no_such_table"))
    async with engine.connect() as conn:
        await conn.execute(text("SET statement_timeout = 50"))
        with pytest.raises(DBAPIError):
            await conn.execute(text("SELECT pg_sleep(2)"))
    await engine.dispose()
    down = make_engine(f"postgresql://ma:ma@127.0.0.1:{closed_port()}/tasks")
    watch_engine(down, counts)
    with pytest.raises((OperationalError, OSError)):
        async with down.connect() as conn:
            await conn.execute(text("SELECT 1"))
    await down.dispose()
    no_db = make_engine(db_urls.tasks.rsplit("/", 1)[0] + "/no_such_database")
    watch_engine(no_db, counts)
    with pytest.raises(DBAPIError):
        async with no_db.connect() as conn:
            await conn.execute(text("SELECT 1"))
    await no_db.dispose()

    await flush(redis, counts)
    postgres = await read(redis, "postgres")
    assert postgres.totals == {"ok": 3, "error": 2, "timeout": 1, "connection-error": 1}
    assert postgres.window(60).counts == postgres.totals


async def test_http_answers_and_refused_connections_are_counted_per_downstream(redis, identity):
    counts = DownstreamCounts()
    async with http_client("identity", counts, max_connections=4) as http:
        assert (await http.get(identity.url + "/healthz")).status_code == 200
        identity.fault(503, count=1)
        assert (await http.get(identity.url + "/v1/organizations/org_x")).status_code == 503
        identity.fault(429, count=1)
        assert (await http.get(identity.url + "/v1/organizations/org_x")).status_code == 429
        assert (await http.get(identity.url + "/v1/organizations/org_x")).status_code == 401  # no token
    async with http_client("supabase", counts, max_connections=4) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{closed_port()}/auth/v1/health")
    await flush(redis, counts)
    assert (await read(redis, "identity")).totals == {"ok": 1, "5xx": 1, "429": 1, "4xx": 1}
    assert (await read(redis, "supabase")).totals == {"connection-error": 1}


async def test_minutes_older_than_the_kept_ones_are_trimmed_by_the_next_writer(redis):
    clock = Clock(T)
    counts = DownstreamCounts(clock)
    minute = int(T // 60)
    counts.record("stripe", "5xx")
    await flush(redis, counts)
    assert await redis.hget(downstream_key("stripe"), downstream_field("5xx", minute)) == "1"
    assert 0 < await redis.ttl(downstream_key("stripe")) <= 3600

    clock.at = T + 15 * 60  # still among the 16 kept minutes
    counts.record("stripe", "ok")
    await flush(redis, counts)
    assert await redis.hget(downstream_key("stripe"), downstream_field("5xx", minute)) == "1"

    clock.at = T + 16 * 60  # now older than the kept minutes: the first write of this minute deletes it
    counts.record("stripe", "ok")
    await flush(redis, counts)
    fields = await redis.hgetall(downstream_key("stripe"))
    assert fields == {downstream_field("ok", minute + 15): "1", downstream_field("ok", minute + 16): "1"}
