"""Run a module's pools twice: with our lean clients and PoolWorker, and with `MA_STOCK_CLIENTS=1` (bullmq's
own Worker, redis-py's own pool and client), so the switch an operator reaches for after a library upgrade is
known to work. Import both fixtures into a test module that uses `start_pool`."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(params=["lean", "stock"])
def clients(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def start_pool(start_pool: Any, clients: str) -> Any:
    if clients == "lean":
        return start_pool
    return lambda queue="identity-events", **extra: start_pool(queue, MA_STOCK_CLIENTS="1", **extra)
