"""Auto-pipelining for the pooled Redis client (pool/connection.py `PipelinedRedis`): the commands of one
event-loop turn written together on one shared connection and answered in order, as ioredis does for the Node
workers (LIBRARY_TRAPS §17). Which commands may share that connection is decided here too (`passes_through`)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any

from redis.asyncio.connection import ConnectionPool
from redis.exceptions import ConnectionError, ReadOnlyError, ResponseError

try:
    from redis._parsers.hiredis import NOT_ENOUGH_DATA
except ImportError:  # pragma: no cover - another redis-py: no auto-pipelining (pooled_redis checks)
    NOT_ENOUGH_DATA = None

AVAILABLE = NOT_ENOUGH_DATA is not None
"""The redis-py internals the reader relies on are there (the fingerprints in tests/test_overrides.py)."""


_BLOCKING = "BLPOP BRPOP BRPOPLPUSH BLMOVE BLMPOP BZPOPMIN BZPOPMAX BZMPOP XREAD XREADGROUP WAIT WAITAOF"
"""Would hold every other caller's replies behind them."""
_STATEFUL = (
    "SELECT MULTI EXEC DISCARD WATCH UNWATCH SUBSCRIBE PSUBSCRIBE SSUBSCRIBE UNSUBSCRIBE PUNSUBSCRIBE \
SUNSUBSCRIBE MONITOR AUTH HELLO RESET QUIT SHUTDOWN"
)
"""Would change the shared connection under every other caller (with CLIENT REPLY)."""
PASS_THROUGH = frozenset([*_BLOCKING.split(), *_STATEFUL.split(), "CLIENT REPLY"])
"""Commands that take a connection of their own from the pool instead of the shared pipelined one."""


class AutoPipeline:
    """One connection shared by every caller of a client: each command is packed into a buffer that is written
    once per event-loop turn, and one reader resolves the callers' futures in order as the replies come back (what
    ioredis does for the Node workers). Forty lanes completing jobs in the same turn cost one write and a few reads
    instead of forty of each, and no connection is taken from or given back to a pool per command.

    `eager`: while fewer than this many commands are in flight (written and not yet answered), a command is
    written at once instead of at the end of the turn. Without it, one worker process and Redis take turns: all
    the lanes' replies arrive in one read, the lanes run their jobs in one turn, and their completions go out in
    one write while Redis waited, then Redis runs them all while the lanes wait. Writing the turn's first commands
    at once lets Redis work on them while the lanes still run: it is what ioredis's write per command gives the
    Node workers. With half the lanes (PipelinedRedis, `pooled_redis(eager_writes=)`), one process at
    concurrency 10 went from 0.62-0.70x to 0.93-1.09x Node BullMQ's jobs/s (one process each, alternating rounds
    of 20,000 no-op jobs), at the cost of a write for each of those commands. 0: only the end-of-turn write.
    A worker turns them off while its host's CPUs are all taken, where those writes cost more than they overlap
    (pool/contention.py).

    Redis answers a connection's commands in the order they were sent, so the replies' order is the futures'.
    A caller cancelled while its command is in flight does not disturb the others: its reply is read and dropped
    (a pooled connection has to be closed in that case). When the connection fails, every command in flight fails
    with ConnectionError (the client's retry then sends it again on a new connection, as the pooled path does) and
    the next command connects afresh.
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self.eager = 0
        """Set by `pooled_redis(eager_writes=)`; a worker's follows its host's CPUs (pool/contention.py)."""
        self._conn: Any = None
        """The shared connection; `_out` and `_pending` always belong to it (`_fail` clears all three)."""
        self._connecting: asyncio.Future[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._out: list[bytes] = []
        self._unsent = 0
        """Commands in `_out`: the others of `_pending` are in flight."""
        self._pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set with the connection
        self._discarding: set[asyncio.Task[None]] = set()

    async def connect(self) -> None:
        """Until there is a shared connection (the pool's own connect retries apply, once)."""
        while self._conn is None:
            if self._connecting is None:
                self._connecting = opening = asyncio.ensure_future(self._open())
                opening.add_done_callback(self._opened)
            await asyncio.shield(self._connecting)

    def _opened(self, opening: asyncio.Future[None]) -> None:
        if self._connecting is opening:
            self._connecting = None
        if not opening.cancelled():
            opening.exception()  # retrieved: every waiter may have been cancelled

    async def call(self, *args: Any) -> Any:
        if self._conn is None:
            await self.connect()
        conn, loop = self._conn, self._loop  # the connection's loop (asking asyncio is a getpid(2) on 3.11)
        future = loop.create_future()
        self._out.extend(conn.pack_command(*args))
        self._pending.append(future)
        self._unsent += 1
        if len(self._pending) - self._unsent < self.eager:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await future

    async def _open(self) -> None:
        conn = await self._pool.get_connection()  # type: ignore[no-untyped-call]  # redis-py: unannotated
        self._conn, self._loop = conn, asyncio.get_running_loop()
        self._reader = asyncio.ensure_future(self._read(conn))

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out, self._unsent = self._out, [], 0
        conn = self._conn
        if not out or conn is None:  # no connection: its commands already failed with it (`_fail`)
            return
        try:
            conn._writer.writelines(out)
        except Exception as error:  # noqa: BLE001 - the transport is gone: every command in flight fails
            self._fail(conn, ConnectionError(f"Error while writing to socket. {error}."))

    async def _read(self, conn: Any) -> None:
        stream, reader = conn._parser._stream, conn._parser._reader
        pending = self._pending
        try:
            while True:
                data = await stream.read(65536)
                if not data:
                    raise ConnectionError("Connection closed by server.")
                reader.feed(data)
                while True:
                    try:
                        reply = reader.gets()
                    except UnicodeDecodeError as error:  # the whole reply was read: the error is its caller's
                        reply = error
                    if reply is NOT_ENOUGH_DATA:
                        break
                    future = pending.popleft()
                    if isinstance(reply, ReadOnlyError) and getattr(self._pool, "is_master", False):
                        # As redis-py's SentinelManagedConnection: the master we still talk to was demoted;
                        # everything in flight is sent again to the new one (the client's retry, new connection).
                        demoted = ConnectionError("The previous master is now a slave")
                        if not future.done():
                            future.set_exception(demoted)
                        raise demoted
                    if future.done():
                        continue  # its caller was cancelled
                    if isinstance(reply, ResponseError | ConnectionError | UnicodeDecodeError):
                        future.set_exception(reply)
                    elif isinstance(reply, list) and reply and isinstance(reply[0], ConnectionError):
                        future.set_exception(reply[0])
                    else:
                        future.set_result(reply)
        except asyncio.CancelledError:
            self._fail(conn, ConnectionError("Connection closed by the client."))
            raise
        except Exception as error:  # noqa: BLE001 - a reset, a protocol error: every command in flight fails
            self._fail(conn, error if isinstance(error, ConnectionError) else ConnectionError(str(error)))

    def _fail(self, conn: Any, error: BaseException) -> None:
        if conn is not self._conn:
            return
        self._conn, self._out, self._unsent = None, [], 0
        pending, self._pending = self._pending, collections.deque()
        for future in pending:
            if not future.done():
                future.set_exception(error)
        task = asyncio.ensure_future(self._discard(conn))
        self._discarding.add(task)
        task.add_done_callback(self._discarding.discard)

    async def _discard(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            await conn.disconnect(nowait=True)
        with contextlib.suppress(Exception):
            await self._pool.release(conn)

    async def aclose(self) -> None:
        """Stop reading, fail what is in flight and give the connection back (closed) to the pool."""
        for task in (self._connecting, self._reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._connecting = self._reader = None
        if self._conn is not None:  # a reader cancelled before it ever ran
            self._fail(self._conn, ConnectionError("Connection closed by the client."))
        if self._discarding:
            await asyncio.gather(*self._discarding, return_exceptions=True)


def passes_through(name: Any) -> bool:
    """Whether command `name` takes a pooled connection of its own (memoised: a handful of names)."""
    known = _ROUTES.get(name)
    if known is None:
        text = (name.decode() if isinstance(name, bytes) else str(name)).upper()
        words = text.split() or [""]
        known = _ROUTES[name] = (
            text in PASS_THROUGH
            or words[0] in PASS_THROUGH
            or (words[0] == "CLIENT" and text not in _SHARED_CLIENT)
        )
    return known


_ROUTES: dict[Any, bool] = {}
_SHARED_CLIENT = frozenset(["CLIENT SETNAME", "CLIENT GETNAME", "CLIENT ID", "CLIENT INFO", "CLIENT LIST"])
"""CLIENT subcommands that change nothing a later command depends on; the others (TRACKING, REPLY, NO-EVICT,
CACHING, ...) set state on their connection, or are ours to keep apart (KILL, PAUSE)."""
