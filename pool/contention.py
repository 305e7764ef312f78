"""Eager writes only while the host has a CPU to spare (`AutoPipeline.eager`, pool/autopipeline.py).

Eager writes send a turn's first commands at once, so Redis works on them while the lanes still run. That overlap
is worth its extra write(2)s while there is a free CPU for Redis and for us. On a host whose CPUs are all taken
(more busy processes than cores), each early write is one more wake-up competing for the CPUs everyone waits
for, and the end-of-turn write alone is faster.

Measured on 2 cores with Valkey on the same host, alternating rounds of 20,000 no-op jobs (medians):
- two pool processes x concurrency 10: 9,663-9,893 jobs/s without eager writes, against 8,754-8,981 with half
  the lanes (Node BullMQ 9,335-10,192 in the same rounds); each worker waited for a CPU 0.32-0.42 s per second it
  ran with eager writes and 0.37-0.41 s without them (so turning them off does not bring the ratio under FREE),
  and Valkey waited 0.26-0.28 s per second of wall time with them, 0.12-0.13 without;
- one process: 9,487-9,691 jobs/s with them, against 5,862-5,927 without; the worker waited 0.04-0.10 s per
  second it ran.

The kernel says which case we are in. /proc/thread-self/schedstat gives how long the event loop's thread ran on
a CPU and how long it waited, runnable, for one. `adapt_eager` reads it four times a second. It turns eager writes off
while the thread waits more than BUSY seconds per second it runs, and back on below FREE. Between the two it
leaves them off if they are off, so a process near the line does not flip at every reading.

A quiet thread keeps them on whatever the ratio: one that ran and waited together under QUIET of the window. It
runs in short bursts between awaits, each wake-up waits a little for a CPU even on a host with CPUs to spare, so
the ratio over its short runs says little about them, and its writes are too few to take a CPU from anyone. Its
waits count in its demand, so a thread starved by a busy host or held back by a CPU quota (one that waits much
and so runs little) is not quiet. Measured with one process of 20 ms jobs (bench/io_bound.py) on this host, its
CPUs mostly free: at concurrency 10 and 20 the thread ran 6-14 % of each window, waited 0.15-0.5 s per second
run, and ran and waited together under 19 %. With the first version's line (ran under 5 % of the window, waits
not counted) BUSY turned its eager writes off most of the time, at a cost of 0.005 (concurrency 10) and 0.016
(20) of the bound (alternating rounds, medians of 4: 0.949 / 0.954x and 0.915 / 0.931x, with a 20 % line on the
run alone). Two no-op processes x concurrency 10, where the off switch matters, ran and waited 27-55 % of each
window; at concurrency 50 the I/O-bound thread's 18-35 % leaves it mostly to the ratio, as before.

A worker whose event loop's thread is on a CPU under LIGHT of the time (I/O-bound jobs: lanes awaiting their
downstreams) writes every command at once (`light`: all its lanes), as ioredis does: little is saved by holding
a command for the end of a turn that has few. Once there it keeps them up to LIGHT_KEPT, so that its own extra
writes do not flip it back at every reading. Measured with one process of 20 ms jobs against Little's law's
bound, alternating rounds (medians of 4), half the lanes against all of them: concurrency 10 0.918x / 0.923x,
20 0.886-0.892x / 0.892-0.907x, 50 0.885x / 0.891x: a small gain, within one bench/io_bound.py run's noise
(its REPORT rows moved by -0.009 to 0.000 between the runs just before and after). A busier thread keeps half
its lanes (no-op jobs, one process: half the lanes did better than all of them, 1.58x against 1.46x the
end-of-turn write alone).

Without the file (not Linux, a kernel without scheduler statistics), the setting stays as
configured. In a container with a CPU quota, time throttled by the quota counts as waiting too: a worker at its
quota also stops writing early, which is what it should do there as well.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.asyncio import Redis

from pool.connection import PipelinedRedis

log = logging.getLogger(__name__)

SCHEDSTAT = "/proc/thread-self/schedstat"
BUSY = 0.25
"""Seconds waited for a CPU per second run, above which eager writes stop."""
FREE = 0.15
"""... and below which they resume."""
QUIET = 0.25
"""Share of the window the thread ran and waited together, below which its waits are not read as scarce CPUs."""
LIGHT = 0.5
"""Share of the window the thread ran, below which the `light` setting applies instead of `configured` ..."""
LIGHT_KEPT = 0.6
"""... and below which a thread already at `light` keeps it (its own extra writes do not flip it back)."""
EVERY_S = 0.25


def eager_for(
    ran_s: float, waited_s: float, window_s: float, current: int, configured: int, light: int | None = None
) -> int:
    """The eager-write threshold for the next window, from the last window's scheduler times: 0 while CPUs are
    scarce; otherwise `configured`, or `light` (when given) while the thread ran under LIGHT of the window."""
    kept = LIGHT_KEPT if current == light else LIGHT
    on = configured if light is None or ran_s >= kept * window_s else light
    if ran_s + waited_s < QUIET * window_s:
        return on
    if ran_s <= 0:  # waited the window through without a turn on a CPU (a quota's throttling, say)
        return 0
    ratio = waited_s / ran_s
    if ratio > BUSY:
        return 0
    if ratio < FREE or current != 0:
        return on
    return 0  # between the lines, and off: stays off


class CpuWait:
    """The calling thread's time on a CPU and time waiting for one, in seconds since the previous `since_last`
    (the first call counts from construction). Read it from the thread it is about: the event loop's."""

    def __init__(self, path: str = SCHEDSTAT) -> None:
        self.path = path
        self._last = self._read()
        self.available = self._last is not None
        """The kernel gave the figures at construction (False: not Linux, no scheduler statistics)."""

    def _read(self) -> tuple[int, int] | None:
        try:
            with open(self.path, "rb") as stats:
                ran, waited = stats.read().split()[:2]
            return int(ran), int(waited)
        except (OSError, ValueError):
            return None

    def since_last(self) -> tuple[float, float] | None:
        """(ran, waited) in seconds; None when a read failed (this one or the previous)."""
        now = self._read()
        last, self._last = self._last, now
        if now is None or last is None:
            return None
        return (now[0] - last[0]) / 1e9, (now[1] - last[1]) / 1e9


async def adapt_eager(
    pipeline: Any, configured: int, *, light: int | None = None, every_s: float = EVERY_S
) -> None:
    """Keep `pipeline.eager` (an AutoPipeline) at `configured` (or `light`, see eager_for) while CPUs are free
    and at 0 while they are not, until cancelled. Runs on the pipeline's event loop. Without the kernel's
    figures it leaves `configured` and returns; a read failing later (a file descriptor short, say) skips that
    window."""
    loop = asyncio.get_running_loop()
    wait = CpuWait()
    pipeline.eager = configured
    if not wait.available:
        return
    started = loop.time()
    while True:
        await asyncio.sleep(every_s)
        sample = wait.since_last()
        now = loop.time()
        window, started = now - started, now
        if sample is None:
            continue
        eager = eager_for(*sample, window, pipeline.eager, configured, light)
        if eager != pipeline.eager:
            ran, waited = sample
            log.debug("eager writes %s: waited %.3fs for a CPU in %.3fs run", eager or "off", waited, ran)
            pipeline.eager = eager


def start_adapting(
    redis: Redis, configured: int, *, light: int | None = None, every_s: float = EVERY_S
) -> asyncio.Task[None] | None:
    """`adapt_eager` for a worker's pooled client, when it auto-pipelines (a PipelinedRedis, sentinel or not;
    MA_REDIS_AUTOPIPELINE=0 and MA_STOCK_CLIENTS=1 give other clients, with nothing to adapt). Cancel the task
    when the worker stops."""
    if not isinstance(redis, PipelinedRedis):
        return None
    return asyncio.ensure_future(adapt_eager(redis.autopipeline, configured, light=light, every_s=every_s))
