"""The soak's fast variant: 20,000 mixed jobs through the whole stack with the exporter and ma-top running; no key
leaks afterwards and each process's Redis connections stable (bench/soak.py runs the 1,000,000-job one)."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.loadstack import load_stack
from tests.support.soak import Soak

pytestmark = [
    pytest.mark.slow,
    pytest.mark.soak,
    pytest.mark.timeout(1800),
]  # ~25 min on a busy machine: not in CI


def test_20000_mixed_jobs_leave_no_leaked_key_and_steady_redis_connections(tmp_path):
    with load_stack(tmp_path / "soak") as stack:
        result = asyncio.run(Soak(stack, 20_000).run())  # the stack's set-up runs its own loop: none here
    assert result["jobs"] == 20_000
    assert result["failed_jobs"] == 0, result
    assert result["leaked_keys"] == 0, result["leaks"]
    assert result["keys"].get("bull: job retained", 0) > 0  # the scan saw the retained jobs it classifies
    assert result["connections_stable"], result["connections"]
    assert result["top_runs"] > 0 and result["top_failures"] == 0
    assert result["exporter_scrapes"] > 0 and result["exporter_failures"] == 0
