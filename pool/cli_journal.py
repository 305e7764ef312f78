"""The audit journal from a CLI command: the same `Journal` ma-top writes (`ma:audit` + var/ma-top-audit.log)."""

from __future__ import annotations

from pathlib import Path

JOURNAL = Path("var/ma-top-audit.log")


async def journal(redis_url: str | None, action: str, target: str, ids: list[str], outcome: str) -> None:
    """Best effort: the action already happened; a Redis that cannot be reached leaves the local file only."""
    from redis.exceptions import RedisError

    from pool.connection import plain_redis
    from pool.monitor.actions import Journal

    if not redis_url:
        return
    redis = plain_redis(redis_url)
    try:
        await Journal(redis, JOURNAL).write(action, target, ids, outcome)
    except (RedisError, OSError):
        pass
    finally:
        await redis.aclose()
