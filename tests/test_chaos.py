"""Chaos: the whole stack under supervisord with a steady mixed load, one fault at a time, then invariants.

Each scenario builds its own load (unique ids, so effects are countable), has a Node BullMQ producer add it at a
steady rate (plus a few jobs through our own CLI), injects its fault while the load runs, waits for the queues to
drain and checks, counting in the databases and at the doubles:
- every accepted job ended completed, or failed with a reason (none lost, none stuck);
- each side effect happened exactly once (notifications, org bootstraps, invitations, rollups, invoices and
  Stripe charges, bulk items);
- no supervisord process ended FATAL; no secret appears in any log.
Under every scenario but the 5-minute outages runs a steady background load of every job name at
MA_CHAOS_LOAD_RATE jobs/s (default 60, half of the pool's capacity; tests/support/chaos.py): none of its jobs may
be lost or fail either, and its pickup p99 before, during and after the fault and the time to drain the backlog
the fault built are recorded. MA_CHAOS_LOAD_RATE=0 runs the scenarios without it (CI, .ci/run). The outages keep
their own steady load only: at 60 jobs/s five minutes of a downstream down queue 18,000 jobs, whose drain alone
(at the net 60 jobs/s left at the reference capacity, less on a shared machine) would exceed their timeout.
Figures (jobs in, completed, failed, lost, duplicated, recovery time, pickup, drain) go to var/chaos-results.json
for bench/REPORT.md. Run alone with `-m chaos`.
The 5-minute outages are in tests/test_chaos_outages.py, the fuzzing in tests/test_chaos_fuzz.py.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time

import pytest

from devstack import engines
from tests.support.chaos import LOAD_RATE, BackgroundLoad
from tests.support.chaos_load import (
    Load,
    build_load,
    cli_enqueue,
    drain,
    finish_producer,
    first_completion_after,
    load_flowing,
    start_producer,
    tag,
)
from tests.support.chaos_stack import (
    POOL_PROGRAMS,
    Stack,
    bg,  # noqa: F401 - fixture
    counter_moved,
    mix,  # noqa: F401 - fixture (bg needs it)
    pool_counter,
    stack,  # noqa: F401 - fixture (module-scoped: this module's own stack)
)
from tests.support.chaos_verify import record, verify
from tests.support.waits import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.chaos, pytest.mark.timeout(600 if LOAD_RATE == 0 else 900)]
FLOWING_S = 30 if LOAD_RATE == 0 else 120
"""How long a scenario waits for its first jobs to complete: under the background load they queue behind its
backlog (a few seconds at the reference capacity; up to a minute on a busy shared machine)."""


# -- evidence that a kill or a restart was hit --------------------------------------------------------------------
async def stalls_of(
    stack: Stack, load: Load, since_ms: int, also: dict[str, dict[str, str]] | None = None
) -> list[tuple[str, str]]:
    """(queue, job id) of this load's jobs (and of `also`'s: the background load's ids) reported stalled on
    ma:events since `since_ms`."""
    ours = {
        (queue, job_id)
        for ids in (load.ids, also or {})
        for queue, by in ids.items()
        for job_id in by.values()
    }
    redis = stack.redis()
    try:
        entries = await redis.xrange("ma:events", min=f"{since_ms}-0")
    finally:
        await redis.aclose()
    found = [(f.get("queue", ""), f.get("jobId", "")) for _, f in entries if f.get("kind") == "stalled"]
    return [key for key in found if key in ours]


async def queues_with_jobs_active(stack: Stack, load: Load) -> tuple[set[str], set[str]]:
    """Queues with a job active that has stalled at most once (killing its process again stays well inside the
    CHAOS table's three allowed stalls: a job killed four times fails, which is not what the scenario tests):
    those where it is one of this load's (its tag in the job's data), and those with any. Under the background
    load nearly every queue has a job active, and most of them are the background's."""
    redis = stack.redis()
    try:
        ours, busy = set(), set()
        for q in POOL_PROGRAMS:
            for job_id in await redis.lrange(f"bull:{q}:active", 0, -1):
                stalls, data = await redis.hmget(f"bull:{q}:{job_id}", "stc", "data")
                if int(stalls or 0) < 2:
                    busy.add(q)
                    if load.tag in (data or ""):
                        ours.add(q)
        return ours, busy
    finally:
        await redis.aclose()


# -- scenarios ----------------------------------------------------------------------------------------------------
async def test_sigkill_a_random_worker_20_times_during_load(stack: Stack, bg: BackgroundLoad):
    load = await build_load(stack, tag())
    since_ms = int(time.time() * 1000)
    started = time.monotonic()
    producer = start_producer(stack, load, rate=3)  # the load spans the ~20 s of kills
    cli_enqueue(stack, load)
    rng, kills, kills_in_flight = random.Random(7), 0, 0
    # Jobs that take a while, as in production (identity answers in 0.5 s): a kill then finds work in flight.
    stack.identity.hook("POST", "/__latency", {"path": "/v1/", "seconds": 0.5})
    bg.fault_started()
    try:
        deadline = time.monotonic() + 120
        while kills < 20:
            assert time.monotonic() < deadline, f"only {kills} kills in 120 s: no pool process stayed up 4 s"
            eligible = [
                p
                for p in stack.pool_processes()
                if p["statename"] == "RUNNING" and p["now"] - p["start"] >= 4
            ]  # past startsecs
            if eligible:
                # A kill of an idle worker tests little: when some queue has a job active, kill one of its processes,
                # one with a job of this load first (its effects are the ones counted).
                ours, busy = await queues_with_jobs_active(stack, load)
                working = [p for p in eligible if p["group"] in ours] or [
                    p for p in eligible if p["group"] in busy
                ]
                victim = rng.choice(working or eligible)
                name = f"{victim['group']}:{victim['name']}"
                os.kill(victim["pid"], signal.SIGKILL)
                kills += 1
                kills_in_flight += bool(working)
                await wait_for(
                    lambda name=name, pid=victim["pid"]: stack.sup.pid(name) != pid,
                    timeout=10,
                    what=f"supervisord seeing {name} (pid {victim['pid']}) die",
                )
            await asyncio.sleep(1.0)  # pacing, the point: about one kill a second while the load arrives
    finally:
        stack.identity.hook("POST", "/__latency", {"path": "/v1/", "seconds": 0})
        bg.fault_ended()
    await bg.stop()  # once the backlog drained (or its limit): what follows waits for a finite backlog
    finish_producer(producer, load)
    figures = await verify(
        stack,
        load,
        "SIGKILL a random worker x20",
        started,
        extra={"kills": kills, "kills_with_a_job_active": kills_in_flight},
        bg=bg,
    )
    assert kills_in_flight > 0, "no kill found a queue with a job active"
    # The fault was hit: a killed process held one of this load's jobs (or, under the background load, one of its
    # jobs: they are most of what runs), its lock lapsed, and it was run again.
    stalled = await wait_for(
        lambda: stalls_of(stack, load, since_ms, also=bg.ids),
        timeout=30,
        what="a job of this load stalled by a kill",
    )
    counted = await stalls_of(stack, load, since_ms)
    record({**figures, "stalled_jobs": len(counted), "bg_stalled_jobs": len(stalled) - len(counted)})


async def test_rolling_restart_of_every_program_during_load(stack: Stack, bg: BackgroundLoad):
    load = await build_load(stack, tag())
    pids_before = {f"{p['group']}:{p['name']}": p["pid"] for p in stack.sup.processes()}
    since_ms = int(time.time() * 1000)
    started = time.monotonic()
    producer = start_producer(stack, load, rate=8)
    await wait_for(lambda: load_flowing(stack, load), timeout=FLOWING_S, what="the load being processed")
    restarted = 0
    bg.fault_started()
    for name in pids_before:
        await asyncio.to_thread(stack.sup.rpc.supervisor.stopProcess, name)  # SIGTERM: in-flight jobs finish
        await asyncio.to_thread(stack.sup.rpc.supervisor.startProcess, name)
        restarted += 1
    bg.fault_ended()
    pids_after = {f"{p['group']}:{p['name']}": p["pid"] for p in stack.sup.processes()}
    await bg.stop()
    finish_producer(producer, load)
    await verify(
        stack,
        load,
        "rolling SIGTERM restart of every program",
        started,
        extra={"restarted": restarted},
        bg=bg,
    )
    # The fault was hit: every program really went down and came back (a new pid each).
    assert all(pids_after[n] not in (0, pid) for n, pid in pids_before.items()), (pids_before, pids_after)
    # ...and SIGTERM let in-flight jobs finish: none of this load's jobs was left for the stall check to find.
    assert await stalls_of(stack, load, since_ms) == []


async def outage(
    stack: Stack,
    engine: engines.Engine,
    scenario: str,
    evidence: tuple[str, tuple[str, ...]],
    bg: BackgroundLoad,
) -> None:
    """Stop an engine for 15 s under load, start it again; processing must resume within 30 s, and the pools
    must have met the outage (`evidence`: the ma:stats counter it moves, and its scopes)."""
    counter, scopes = evidence
    load = await build_load(stack, tag())
    before = await pool_counter(stack, counter, scopes)
    started = time.monotonic()
    producer = start_producer(stack, load, rate=6)
    await wait_for(lambda: load_flowing(stack, load), timeout=FLOWING_S, what="the load being processed")
    bg.fault_started()
    engine.stop()  # Valkey: SIGTERM, it writes its AOF and exits; PostgreSQL: fast shutdown
    await asyncio.sleep(15)  # the outage's length is the point
    engine.start()
    bg.fault_ended()
    back_ms = int(time.time() * 1000)
    await bg.stop()
    finish_producer(producer, load)
    await drain(stack, load)
    recovery = await first_completion_after(stack, load, back_ms)
    figures = await verify(stack, load, scenario, started, recovery_s=recovery, bg=bg)
    assert recovery is not None and recovery <= 30, figures
    await counter_moved(stack, counter, before, f"{scenario}: ma:stats {counter} moved by the outage", scopes)


async def test_valkey_stopped_15s_with_persistence_then_restarted(stack: Stack, bg: BackgroundLoad):
    # Each pool process counts its first failed Redis check of an outage in ma:stats:redis.
    await outage(stack, stack.valkey, "Valkey stopped 15 s (AOF on)", ("connection_failures", ("redis",)), bg)


async def test_postgres_stopped_15s_then_restarted(stack: Stack, bg: BackgroundLoad):
    # Jobs that met the outage (the tasks database, or identity's over its own) failed transiently and were retried.
    await outage(stack, stack.pg, "PostgreSQL stopped 15 s", ("retries", POOL_PROGRAMS), bg)


async def test_identity_answers_429_for_60s(stack: Stack, bg: BackgroundLoad):
    load = await build_load(stack, tag())
    throttled_before = await pool_counter(stack, "throttled")
    answered_before = stack.identity.stats().get("fault 429", 0)
    started = time.monotonic()
    bg.fault_started()
    stack.identity.hook("POST", "/__faults", {"status": 429, "seconds": 60, "path": "/v1/", "retryAfter": 5})
    producer = start_producer(stack, load, rate=4)
    await asyncio.sleep(60)  # the fault's length is the point (it ends by itself after 60 s)
    bg.fault_ended()
    back_ms = int(time.time() * 1000)
    await bg.stop()
    finish_producer(producer, load)
    await drain(stack, load)
    recovery = await first_completion_after(stack, load, back_ms)
    answered = stack.identity.stats().get("fault 429", 0) - answered_before
    throttled = await counter_moved(stack, "throttled", throttled_before, "jobs deferred by the 429s")
    await verify(
        stack,
        load,
        "identity 429 for 60 s",
        started,
        recovery_s=recovery,
        extra={"throttled": throttled, "identity_429s": answered},
        bg=bg,
    )
    assert answered > 0, "identity answered no 429: the fault never met the load"


async def test_identity_answers_401_for_20s(stack: Stack, bg: BackgroundLoad):
    load = await build_load(stack, tag())
    before = stack.identity.stats()
    retries_before = await pool_counter(stack, "retries")
    started = time.monotonic()
    bg.fault_started()
    stack.identity.hook("POST", "/__faults", {"status": 401, "seconds": 20, "path": "/v1/"})
    producer = start_producer(stack, load, rate=6)
    await asyncio.sleep(20)  # the fault's length is the point (it ends by itself after 20 s)
    bg.fault_ended()
    back_ms = int(time.time() * 1000)
    await bg.stop()
    finish_producer(producer, load)
    await drain(stack, load)
    after = stack.identity.stats()
    refused = after.get("fault 401", 0) - before.get("fault 401", 0)
    refreshes = after.get("POST /v1/auth/refresh", 0) - before.get("POST /v1/auth/refresh", 0)
    await verify(
        stack,
        load,
        "identity 401 (expired tokens) for 20 s",
        started,
        recovery_s=await first_completion_after(stack, load, back_ms),
        extra={"identity_401s": refused, "token_refreshes": refreshes},
        bg=bg,
    )
    assert refused > 0, "identity answered no 401: the fault never met the load"
    # A token still refused after its refresh is a transient failure: those jobs were retried, not failed.
    await counter_moved(stack, "retries", retries_before, "jobs retried after their token was refused")


async def test_stripe_answers_5xx_for_30s(stack: Stack, bg: BackgroundLoad):
    load = await build_load(stack, tag())
    answered_before = stack.stripe.stats().get("fault 503", 0)
    retries_before = await pool_counter(stack, "retries", ("billing-invoice",))
    started = time.monotonic()
    bg.fault_started()
    stack.stripe.hook("POST", "/__faults", {"status": 503, "seconds": 30, "path": "/v1/"})
    producer = start_producer(stack, load, rate=6)
    await asyncio.sleep(30)  # the fault's length is the point (it ends by itself after 30 s)
    bg.fault_ended()
    await bg.stop()
    finish_producer(producer, load)
    answered = stack.stripe.stats().get("fault 503", 0) - answered_before
    await verify(stack, load, "Stripe 5xx for 30 s", started, extra={"faults": answered}, bg=bg)
    assert answered > 0, "Stripe answered no 503: the fault never met the load"
    # The charges met the 503s (after the Stripe client's own retry) and their invoice jobs were retried.
    await counter_moved(
        stack, "retries", retries_before, "invoice jobs retried after Stripe's 503s", ("billing-invoice",)
    )
