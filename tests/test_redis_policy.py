"""bullmq never warns about eviction (LIBRARY_TRAPS §7): the pool does, in its log and on ma:events."""

from __future__ import annotations

from tests.support.waits import wait_for


async def test_a_redis_that_may_evict_keys_is_reported_at_start(redis, start_pool):
    await redis.config_set("maxmemory-policy", "allkeys-lru")
    try:
        pool = start_pool("identity-events")
        await wait_for(lambda: "consuming identity-events" in pool.text(), what="pool up")
        assert "Redis maxmemory-policy is 'allkeys-lru'; BullMQ needs 'noeviction'" in pool.text()

        async def reported() -> bool:
            return any(f.get("kind") == "redis-policy" for _, f in await redis.xrange("ma:events"))

        await wait_for(reported, what="policy event on ma:events")
    finally:
        await redis.config_set("maxmemory-policy", "noeviction")


async def test_noeviction_is_not_reported(redis, start_pool):
    pool = start_pool("identity-events")
    await wait_for(lambda: "consuming identity-events" in pool.text(), what="pool up")
    assert "maxmemory-policy" not in pool.text()
