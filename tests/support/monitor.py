"""What Valkey runs, as its MONITOR shows it: for tests that count or order the commands of one queue or one
connection, where Valkey's global command statistics would also count any other client's."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis


@contextlib.asynccontextmanager
async def watching(url: str) -> AsyncIterator[list[tuple[str, list[str]]]]:
    """Every command Valkey runs while the block runs: (client address, the command's words), in order."""
    seen: list[tuple[str, list[str]]] = []
    client = Redis.from_url(url, decode_responses=True)
    try:
        async with client.monitor() as monitor:
            reading = asyncio.ensure_future(_collect(monitor, seen))
            await asyncio.sleep(0.2)  # MONITOR is on before the block starts
            try:
                yield seen
            finally:
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reading
    finally:
        await client.aclose()


def calls(seen: list[tuple[str, list[str]]], command: str, key: str) -> list[list[str]]:
    """The commands named `command` (any case) that name `key`."""
    return [words for _, words in seen if words[0].upper() == command and key in words[1:]]


async def _collect(monitor: Any, seen: list[tuple[str, list[str]]]) -> None:
    async for item in monitor.listen():
        seen.append((f"{item['client_address']}:{item['client_port']}", item["command"].split(" ")))
