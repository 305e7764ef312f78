"""`ma-worker run` on either event loop (MA_EVENT_LOOP): uvloop by default, the standard asyncio loop on request;
each says which in its start line and runs jobs to completion through the full dispatch."""

from __future__ import annotations

import pytest
from bullmq import Queue

from tests.support.waits import wait_for


@pytest.mark.parametrize(
    ("setting", "loop"), [(None, "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")]
)
async def test_a_pool_process_runs_jobs_on_the_event_loop_it_was_given(redis, start_pool, setting, loop):
    extra = {} if setting is None else {"MA_EVENT_LOOP": setting}
    pool = start_pool("identity-events", **extra)
    await wait_for(lambda: "consuming identity-events" in pool.text(), what="pool up")
    assert f"loop={loop}" in pool.text()

    queue = Queue("identity-events", {"connection": redis})
    jobs = [await queue.add("test.sleep", {"seconds": 0.01}) for _ in range(5)]

    async def all_completed() -> bool:
        return all([await job.isCompleted() for job in jobs])

    await wait_for(all_completed, what="jobs completed")
    assert pool.text().count("test.sleep#") == 5
    await queue.close()
