"""bulk.export's streaming: rows that PostgreSQL formats (one CSV or JSON line each) come through a
server-side cursor in chunks, and go through gzip in a thread to the destination (`destination.py`): a temporary
file renamed when complete, or an S3 multipart upload a part at a time. Memory is two batches (plus two upload
parts for S3), whatever the row count.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import TextClause, text
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

from handlers.bulk.checkpoint import Progress
from handlers.bulk.destination import Destination, Output
from handlers.bulk.selection import TABLES, Target, where_clause
from handlers.bulk.telemetry import BulkTelemetry
from handlers.context import JobContext

if TYPE_CHECKING:
    from handlers.super_admin_bulk import BulkFilter

Format = Literal["csv", "jsonl"]
EXPORT_CHUNK_ROWS = 2_000
"""Rows per chunk the export query returns; a fetch takes EXPORT_FETCH_CHUNKS of them (~1 MB)."""
EXPORT_FETCH_CHUNKS = 4


def _csv(column: str) -> str:
    return f"'\"' || replace({column}::text, '\"', '\"\"') || '\"'"


COLUMNS: dict[Target, list[tuple[str, str, str]]] = {
    # (header / JSON key, column, kind). Timestamps print in UTC (the export transaction sets TIME ZONE 'UTC'):
    # `2026-11-28 15:26:42.967798+00` in CSV (what COPY prints; to_char() would cost a third of the export),
    # ISO 8601 `2026-11-28T15:26:42.967798+00:00` in JSON.
    "users": [
        ("id", "id", "text"),
        ("email", "email", "text"),
        ("fullName", "full_name", "text"),
        ("status", "status", "text"),
        ("isSuperAdmin", "is_super_admin", "bool"),
        ("createdAt", "created_at", "time"),
    ],
    "organizations": [
        ("id", "id", "text"),
        ("name", "name", "text"),
        ("slug", "slug", "text"),
        ("status", "status", "text"),
        ("createdAt", "created_at", "time"),
    ],
}


def export_line_sql(target: Target, fmt: Format) -> str:
    """One row's line, formatted by PostgreSQL: CSV (RFC 4180: text quoted, quotes doubled) or a JSON object."""
    columns = COLUMNS[target]
    if fmt == "csv":
        return " || ',' || ".join(
            _csv(f"t.{column}") if kind == "text" else f"t.{column}::text" for _, column, kind in columns
        )
    pairs = ", ".join(f"'{key}', t.{column}" for key, column, _ in columns)
    return f"json_build_object({pairs})::text"


def export_sql(target: Target, fmt: Format, where: str, chunk_rows: int = EXPORT_CHUNK_ROWS) -> str:
    """Rows in id order, as chunks of `chunk_rows` lines per result row, for a server-side cursor.

    Each step of the recursive query takes the next rows after the previous chunk's last id (keyset, on the
    primary key index) and joins their lines into one bytea, so the client receives ~1/chunk_rows as many rows:
    per-row client work (asyncpg records, Python strings) was two thirds of the export time. One statement, so
    one snapshot; the cursor streams chunks as they are fetched, never the whole result.
    """
    table = TABLES[target]
    extra = f" AND {where}" if where else ""
    return f"""WITH RECURSIVE chunk(last_id, body, n) AS (
    SELECT ''::text, NULL::text, -1::bigint
  UNION ALL
    SELECT x.last_id, x.body, x.n FROM chunk c CROSS JOIN LATERAL (
        SELECT max(s.id) AS last_id, string_agg(s.line, E'\\n' ORDER BY s.id) || E'\\n' AS body, count(*) AS n
        FROM (SELECT t.id, {export_line_sql(target, fmt)} AS line FROM {table} t
              WHERE t.id > c.last_id{extra} ORDER BY t.id LIMIT {int(chunk_rows)}) s
    ) x WHERE c.n <> 0
) SELECT convert_to(c.body, 'UTF8'), c.n FROM chunk c WHERE c.n > 0"""


def positional(clause: TextClause, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """`:name` parameters of a text() clause as asyncpg's `$n`, for a cursor on the driver connection."""
    dialect = PGDialect_asyncpg()  # type: ignore[no-untyped-call]  # SQLAlchemy leaves it unannotated
    compiled = clause.bindparams(**params).compile(dialect=dialect)
    order = compiled.positiontup or []
    return str(compiled), [params[name] for name in order]


class _GzipSink:
    """The thread side of an export: gzip, hash and hand on. Only ever called from one thread at a time."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.digest = hashlib.sha256()
        self.size = 0
        self.gz = gzip.GzipFile(fileobj=self, mode="wb", compresslevel=6, mtime=0)

    def write(self, data: bytes) -> int:  # the GzipFile's sink
        self.digest.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()

    def add(self, data: bytes) -> None:
        self.gz.write(data)

    def finish(self) -> None:
        self.gz.close()
        self.out.flush()


@dataclass(frozen=True)
class ExportedFile:
    """The complete export: its size and SHA-256 are of the gzip bytes as written."""

    size: int
    sha256: str


async def write_export(
    ctx: JobContext,
    target: Target,
    fmt: Format,
    flt: BulkFilter,
    destination: Destination,
    progress: Progress,
    telemetry: BulkTelemetry,
) -> ExportedFile:
    """Write the selection to `destination` (a file renamed when complete, or an S3 multipart upload), counting
    rows in `progress`; telemetry ticks from the count until the export is complete. On failure or
    cancellation the destination is abandoned (no partial file, no unfinished upload) and a last message
    published (`failed` on the final attempt); the final `completed` message is the caller's, once it has the
    result."""
    where, params = where_clause(target, flt)
    pending: asyncio.Future[None] | None = None
    try:
        sink = _GzipSink(await destination.open())
        async with ctx.identity_db.connect() as conn:
            conn = await conn.execution_options(
                isolation_level="REPEATABLE READ"
            )  # count and rows: one snapshot
            await conn.begin()
            count_sql = f"SELECT count(*) FROM {TABLES[target]} t{' WHERE ' + where if where else ''}"
            progress.total = int((await conn.execute(text(count_sql), params)).scalar_one())
            await telemetry.start()
            if fmt == "csv":
                header = ",".join(key for key, _, _ in COLUMNS[target]) + "\n"
                await asyncio.to_thread(sink.add, header.encode())
            await conn.execute(text("SET LOCAL TIME ZONE 'UTC'"))
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None, "a connection that is open has its asyncpg connection"
            sql, args = positional(text(export_sql(target, fmt, where)), params)
            cursor = await driver.cursor(sql, *args)
            while chunks := await cursor.fetch(EXPORT_FETCH_CHUNKS):
                data = b"".join(body for body, _ in chunks)
                if pending is not None:
                    await pending  # one batch compressing in a thread while the next is fetched
                    await destination.written()  # no thread writing now: ship what is complete
                pending = asyncio.ensure_future(asyncio.to_thread(sink.add, data))
                progress.succeeded += sum(n for _, n in chunks)
            if pending is not None:
                await pending
            await conn.commit()
        await asyncio.to_thread(sink.finish)
        await destination.commit()
    except BaseException:
        if pending is not None:
            await asyncio.wait([pending])  # the thread finishes its batch before the output goes away
        await destination.abandon()
        telemetry.stop()
        await telemetry.publish("failed" if ctx.final_attempt else "running")
        raise
    telemetry.stop()
    return ExportedFile(sink.size, sink.digest.hexdigest())
