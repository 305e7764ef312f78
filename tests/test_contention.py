"""Eager writes follow the host's CPUs (pool/contention.py), read from the real kernel's scheduler statistics.

The event loop's thread is pinned to one CPU, and a child process spinning on that same CPU makes it wait for it:
the contention a worker sees on a host whose CPUs are all taken, without needing such a host.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from pool.connection import PipelinedRedis, pooled_redis
from pool.contention import (
    BUSY,
    FREE,
    LIGHT,
    LIGHT_KEPT,
    QUIET,
    SCHEDSTAT,
    CpuWait,
    eager_for,
    start_adapting,
)
from tests.support.waits import wait_for

pytestmark = pytest.mark.skipif(
    not Path(SCHEDSTAT).exists() or not hasattr(os, "sched_setaffinity"),
    reason="needs Linux scheduler statistics and CPU affinity",
)


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def spin_on_the_loop(seconds: float) -> None:
    """Keep the loop's thread busy, handing the loop a turn every few milliseconds (as a busy worker does)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        spin(0.005)
        await asyncio.sleep(0)


async def spun_then(pipeline: Any, eager: int) -> bool:
    """Whether `pipeline.eager` is `eager` after keeping the loop's thread busy for 0.1 s."""
    await spin_on_the_loop(0.1)
    return bool(pipeline.eager == eager)


@contextlib.contextmanager
def on_a_quiet_cpu() -> Iterator[int]:
    """Pin the calling thread, for the block, to one of its CPUs that nothing else keeps busy (yields it); skip
    when every one is (the machine's other work would then be the contention measured, not the test's)."""
    allowed = os.sched_getaffinity(0)
    try:
        for cpu in sorted(allowed):
            os.sched_setaffinity(0, {cpu})
            wait = CpuWait()
            spin(0.2)
            sample = wait.since_last()
            if sample is not None and sample[1] < FREE / 2 * sample[0]:
                yield cpu
                return
        pytest.skip(f"no quiet CPU to pin the test to: each of {sorted(allowed)} is kept busy")
    finally:
        os.sched_setaffinity(0, allowed)


@contextlib.contextmanager
def spinning_on(cpu: int) -> Iterator[None]:
    """A child process burning `cpu` for the block."""
    code = f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nprint(flush=True)\nwhile True: pass"
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) as child:
        try:
            assert child.stdout is not None
            child.stdout.readline()  # pinned: from here on it competes for our CPU
            yield
        finally:
            child.kill()


@contextlib.asynccontextmanager
async def adapting(client: Any) -> AsyncIterator[Any]:
    """`client`'s eager writes adapting for the block, started as pool/runtime.py starts them (half of 10 lanes,
    every lane while light), read every 0.1 s; yields its AutoPipeline."""
    task = start_adapting(client, 5, light=10, every_s=0.1)
    assert task is not None
    try:
        yield client.autopipeline
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_the_policy_stops_eager_writes_while_cpus_are_scarce_and_resumes_them_once_free() -> None:
    window = 1.0
    assert eager_for(0.5, 0.2, window, current=5, configured=5) == 0  # waited 0.4 s per second run
    assert eager_for(0.5, 0.1, window, current=0, configured=5) == 0  # 0.2: between the lines, unchanged
    assert eager_for(0.5, 0.1, window, current=5, configured=5) == 5
    assert eager_for(0.5, 0.05, window, current=0, configured=5) == 5  # 0.1: free again
    assert eager_for(0.01, 0.02, window, current=0, configured=5) == 5  # nearly idle: CPUs are free for it
    # Quiet (ran and waited under QUIET): its waits are wake-ups, not scarce CPUs, whatever the ratio to its runs.
    assert eager_for(0.15, 0.06, window, current=0, configured=5, light=10) == 10
    assert eager_for(0.15, 0.06, window, current=10, configured=5, light=10) == 10
    assert eager_for(0.0336, 0.0075, 0.25, current=0, configured=10, light=20) == 20  # traced: io_bound, C=20
    # Starved (a busy host, a CPU quota): it runs little because it waits, which is no quiet.
    assert eager_for(0.15, 0.6, window, current=10, configured=5, light=10) == 0
    assert eager_for(0.04, 0.2, 0.25, current=20, configured=10, light=20) == 0
    # no turn on a CPU at all: scarce, and no dividing by its run time
    assert eager_for(0.0, 0.25, 0.25, current=20, configured=10, light=20) == 0
    assert 0.21 < QUIET * window < LIGHT * window
    assert FREE < BUSY
    # With a `light` setting: every lane's command at once while the thread runs under LIGHT of the window.
    assert eager_for(0.2, 0.01, window, current=5, configured=5, light=10) == 10
    assert eager_for(0.01, 0.0, window, current=0, configured=5, light=10) == 10
    assert eager_for(0.7, 0.01, window, current=10, configured=5, light=10) == 5  # busier: half the lanes
    assert eager_for(0.3, 0.15, window, current=0, configured=5, light=10) == 0  # scarce CPUs win
    assert eager_for(0.3, 0.15, window, current=10, configured=5, light=10) == 0
    assert eager_for(0.65, 0.13, window, current=10, configured=5, light=10) == 5  # between the lines, on
    assert eager_for(0.4, 0.08, window, current=5, configured=5, light=10) == 10  # between the lines, light
    assert eager_for(0.4, 0.08, window, current=0, configured=5, light=10) == 0  # between the lines, off
    # At `light` already, it is kept up to LIGHT_KEPT: its own extra writes do not flip it back.
    assert eager_for(0.55, 0.01, window, current=10, configured=5, light=10) == 10
    assert eager_for(0.55, 0.01, window, current=5, configured=5, light=10) == 5
    assert LIGHT * window > 0.4 and LIGHT * window <= 0.55 < LIGHT_KEPT * window <= 0.65


def test_cpu_wait_counts_the_time_the_thread_waited_for_a_shared_cpu() -> None:
    with on_a_quiet_cpu() as cpu:
        wait = CpuWait()
        assert wait.available
        spin(0.3)
        alone = wait.since_last()
        with spinning_on(cpu):
            wait.since_last()
            spin(0.6)
            shared = wait.since_last()
    assert alone is not None and shared is not None
    ran, waited = alone
    assert ran > 0.2 and waited / ran < BUSY, alone
    ran, waited = shared
    # Two threads spinning on one CPU: the kernel shares it about evenly, so ours waits about as long as it runs.
    assert ran > 0.1 and waited / ran > 0.6, shared


def test_without_the_kernels_figures_there_is_nothing_to_read() -> None:
    wait = CpuWait("/proc/no-such-file")
    assert not wait.available and wait.since_last() is None


async def test_eager_writes_stop_while_the_loop_waits_for_its_cpu_and_resume_when_it_is_free(
    valkey: Any,
) -> None:
    client = pooled_redis(valkey.url, max_connections=4, autopipeline=True, eager_writes=5)
    assert isinstance(client, PipelinedRedis)
    await client.delete("contention:n")
    try:
        with on_a_quiet_cpu() as cpu:
            async with adapting(client) as pipeline:  # the worker's client, adapting as in pool/runtime.py
                with spinning_on(cpu):
                    await wait_for(
                        lambda: spun_then(pipeline, 0),
                        timeout=5,
                        every=0,
                        what="eager writes off, a spinner on the CPU",
                    )
                    assert await client.incr("contention:n") == 1  # the client works as ever meanwhile
                # the CPU free again, the loop's thread busy: half the lanes
                await wait_for(
                    lambda: spun_then(pipeline, 5), timeout=5, every=0, what="half the lanes, CPU free"
                )
                # idle: a lone job's latency is what counts, and the CPUs are free
                await wait_for(lambda: pipeline.eager == 10, timeout=5, what="every lane on an idle loop")
    finally:
        await client.delete("contention:n")
        await client.aclose()


async def test_a_quiet_loop_keeps_every_lanes_eager_writes_though_its_wake_ups_wait_for_a_busy_cpu(
    valkey: Any,
) -> None:
    # I/O-bound lanes: short runs between awaits. Each wake-up waits for the CPU a spinner holds, more per second
    # run than BUSY, but the thread ran and waited a small share of the time: its writes stay eager (every lane).
    client = pooled_redis(valkey.url, max_connections=4, autopipeline=True, eager_writes=5)
    assert isinstance(client, PipelinedRedis)
    try:
        with on_a_quiet_cpu() as cpu:
            async with adapting(client) as pipeline:
                await wait_for(lambda: pipeline.eager == 10, timeout=5, what="every lane on an idle loop")
                with spinning_on(cpu):
                    wait, seen = CpuWait(), set()
                    started = time.perf_counter()
                    # about 1 s of a lane's rhythm: 1 ms on the CPU, then a 9 ms await
                    for _ in range(100):
                        spin(0.001)
                        await asyncio.sleep(0.009)
                        seen.add(pipeline.eager)
                    sample, elapsed = wait.since_last(), time.perf_counter() - started
    finally:
        await client.aclose()
    assert sample is not None
    ran, waited = sample
    if waited <= BUSY * ran or ran + waited >= QUIET * elapsed:
        # the scheduler decides how long a woken thread waits for a spinner's CPU (older CFS: hardly at all)
        pytest.skip(f"this kernel's wake-ups did not make the case: ran {ran:.3f} s, waited {waited:.3f} s")
    assert seen == {10}, sample


@pytest.mark.parametrize("kind", ["stock", "no-autopipeline"])
async def test_a_client_without_auto_pipelining_has_nothing_to_adapt(valkey: Any, kind: str) -> None:
    # stock: redis-py's own client even when auto-pipelining is asked for
    client = pooled_redis(valkey.url, max_connections=2, stock=kind == "stock", autopipeline=kind == "stock")
    try:
        assert not isinstance(client, PipelinedRedis)
        assert start_adapting(client, 5) is None
    finally:
        await client.aclose()
