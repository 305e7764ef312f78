"""Chaos, fuzzing: 10,000 payloads across every job name (wrong values, missing fields, huge strings, wrong
types, unknown names) and 20 jobs of non-JSON data, under the background load: each job ends completed or failed
with a short reason, none is lost, no process ends up other than RUNNING, no secret appears in any log.
"""

from __future__ import annotations

import random
import time
import warnings
from typing import Any

import pytest

from tests.support.chaos import LOAD_RATE, BackgroundLoad
from tests.support.chaos_load import Load, drain
from tests.support.chaos_stack import (
    Stack,
    bg,  # noqa: F401 - fixture
    mix,  # noqa: F401 - fixture (bg needs it)
    stack,  # noqa: F401 - fixture (module-scoped: this module's own stack)
)
from tests.support.chaos_verify import background_figures, record, secrets_in_logs

pytestmark = [pytest.mark.slow, pytest.mark.chaos, pytest.mark.timeout(600 if LOAD_RATE == 0 else 900)]


# -- fuzzing ------------------------------------------------------------------------------------------------------
HUGE = "<huge>"


def _huge(value: Any) -> Any:
    """The marker becomes a 100 KB string here (hypothesis would print it on every draw)."""
    if value == HUGE:
        return "é" * 100_000
    if isinstance(value, dict):
        return {k: _huge(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_huge(v) for v in value]
    return value


def fuzz_payloads(count: int, seed: int) -> list[tuple[str, str, Any]]:
    """(queue, job name, data) across every job name: valid-looking and wrong values, missing fields, huge
    strings, wrong types, unknown names. Ids are random, so nothing real is touched by those that validate."""
    from hypothesis import strategies as st
    from hypothesis.errors import NonInteractiveExampleWarning

    from pool.queue_table import QUEUES

    names = [(q, n) for q, spec in QUEUES.items() for n in spec.handlers] + [
        ("identity-events", "no.such.job")
    ]
    scalar = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=30),
        st.text(alphabet="abc_0123", min_size=1, max_size=12).map(lambda s: f"x_{s}"),
        st.sampled_from(["2024-08-01T00:00:00Z", "daily", "users", "csv", "not-a-date", "", " "]),
        st.just(HUGE),
    )
    value = st.recursive(
        scalar,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=6,
    )
    keys = st.sampled_from(
        [
            "organizationId",
            "tenantId",
            "taskId",
            "assigneeId",
            "assignedBy",
            "assignedAt",
            "email",
            "invitationId",
            "role",
            "invitedBy",
            "bulkJobId",
            "actorId",
            "target",
            "ids",
            "filter",
            "reason",
            "format",
            "subscriptionId",
            "periodStart",
            "periodEnd",
            "resolution",
            "features",
            "stripeEventId",
            "type",
            "payload",
            "signature",
            "invoiceId",
            "olderThanDays",
            "windowMinutes",
            "unexpected",
        ]
    )
    payload = st.one_of(st.dictionaries(keys, value, max_size=10), value)
    rng = random.Random(seed)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonInteractiveExampleWarning)
        pool = [payload.example() for _ in range(500)]  # example() is slow-ish: draw a pool, mix from it
    for _ in range(count):
        queue, name = rng.choice(names)
        data = rng.choice(pool)
        if isinstance(data, dict) and rng.random() < 0.5:  # mix in a second draw: more fields per payload
            other = rng.choice(pool)
            data = {**data, **other} if isinstance(other, dict) else data
        if isinstance(data, dict) and data.get("actorId") == "user_root":
            data["actorId"] = "x_not_root"
        out.append((queue, name, _huge(data)))
    return out


async def test_10000_fuzzed_payloads_each_end_with_a_reason_and_the_pool_survives(
    stack: Stack, bg: BackgroundLoad
):
    from bullmq import Queue

    started = time.monotonic()
    payloads = fuzz_payloads(10_000, seed=11)
    # The test's own producer: batches of 500 payloads, some of 100 KB strings, are megabytes per write; with the
    # background load on a busy machine one took longer than 10 s to write (the pool's timeouts are not this one).
    redis = stack.redis(timeout=60)
    ids: dict[str, dict[str, str]] = {}
    bg.fault_started()
    try:
        by_queue: dict[str, list[tuple[str, Any]]] = {}
        for queue, name, data in payloads:
            by_queue.setdefault(queue, []).append((name, data))
        for queue, jobs in by_queue.items():
            q = Queue(queue, {"connection": redis})
            for at in range(0, len(jobs), 500):
                added = await q.addBulk(
                    [
                        {"name": n, "data": d, "opts": {"attempts": 2, "backoff": 100}}
                        for n, d in jobs[at : at + 500]
                    ]
                )
                ids.setdefault(queue, {}).update({job.id: job.id for job in added})
        # A foreign producer writing non-JSON data (Node bullmq always writes JSON; this one does not).
        q = Queue("identity-events", {"connection": redis})
        for i in range(20):
            job = await q.add("organization.created", {"organizationId": f"x_{i}"}, {"delay": 3000})
            await redis.hset(
                f"bull:identity-events:{job.id}", "data", f"organizationId=x_{i}&garbage=\x00\x01"
            )
            ids["identity-events"][job.id] = job.id
    finally:
        await redis.aclose()
    bg.fault_ended()
    await bg.stop()
    load = Load("fuzz", ids=ids)
    states = await drain(stack, load, timeout=400)
    flat = [(q, *row) for q, rows in states.items() for row in rows]
    fatal = [f"{p['group']}:{p['name']}" for p in stack.sup.processes() if p["statename"] != "RUNNING"]
    figures = {
        "scenario": "10,000 fuzzed payloads + 20 non-JSON",
        "jobs_in": len(flat),
        "completed": sum(1 for *_, s, _ in flat if s == "completed"),
        "failed_with_reason": sum(1 for *_, s, r in flat if s == "failed" and r),
        "failed_without_reason": sum(1 for *_, s, r in flat if s == "failed" and not r),
        "lost": sum(1 for *_, s, _ in flat if s in ("lost", "pending")),
        "duplicated": 0,
        "missing_effects": 0,
        "fatal": len(fatal),
        "secrets_in_logs": len(secrets_in_logs(stack)),
        "recovery_s": None,
        "elapsed_s": round(time.monotonic() - started, 1),
        **await background_figures(stack, bg),
    }
    record(figures)
    assert figures["lost"] == 0 and figures["failed_without_reason"] == 0, figures
    assert not bg.lost and not bg.failed, (bg.lost[:10], bg.failed[:10])
    assert not fatal and figures["secrets_in_logs"] == 0, (fatal, secrets_in_logs(stack))
    reasons = [r for *_, s, r in flat if s == "failed"]
    assert sum("not valid JSON" in r for r in reasons) == 20
    assert all(len(r) < 2000 for r in reasons), "reasons stay short even for 100 KB inputs"
