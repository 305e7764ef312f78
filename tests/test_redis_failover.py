"""Redis failover through Sentinel, under a steady load: a primary, a replica and three sentinels (embedded
Valkey); a pool slot, `ma-top --once` and the CLI given a `redis+sentinel://` URL; a Node producer connected
through the sentinels adds jobs at a steady rate; the primary is SIGKILLed mid-run. Counted and printed: the time
from the kill to the first job completed on the new primary, acknowledged adds lost (replication is asynchronous:
an add the primary acknowledged and had not yet sent to the replica is gone), and jobs run twice (a completion the
new primary never saw)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.support import sentinel, top
from tests.support.paths import BIN, ROOT
from tests.support.processes import PoolProcess, pool_env
from tests.support.waits import wait_for

Q = "identity-events"


async def _master_port(group: sentinel.Group) -> int:
    client = Redis(port=group.sentinels[0].port, decode_responses=True, socket_timeout=2)
    try:
        _, port = await client.sentinel_get_master_addr_by_name(sentinel.MASTER)
        return int(port)
    finally:
        await client.aclose()


@pytest.mark.slow
async def test_a_primary_killed_under_load_fails_over_and_the_losses_are_counted(
    tmp_path: Path, db_urls: Any, node_bullmq: Path, tasks_db: Any
) -> None:
    with sentinel.group(tmp_path / "redis") as group:
        env = pool_env(group.url, db_urls, MA_HEARTBEAT_INTERVAL="1")
        pool = PoolProcess(Q, env, tmp_path / "pool.log")
        try:
            await wait_for(lambda: f"consuming {Q}" in pool.text(), what="pool up through the sentinels")
            snapshot = top.once(group.url, tmp_path)  # ma-top reads through the sentinels too
            assert not top.about(snapshot, "redis-down", "redis")
            cli = subprocess.run(
                [str(BIN / "ma-worker"), "enqueue", Q, "test.effect", "--data", '{"key": "via-cli"}'],
                capture_output=True,
                text=True,
                env=env,
                cwd=ROOT,
                timeout=60,
            )
            assert cli.returncode == 0, cli.stderr

            prefix = f"fo-{uuid.uuid4().hex[:8]}"
            producer = subprocess.Popen(
                ["node", "load_sentinel.mjs", group.hosts, sentinel.MASTER, Q, prefix, "600", "50"],
                cwd=node_bullmq,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )

            async def done() -> int:
                return int(
                    await tasks_db.fetchval(
                        "SELECT count(*) FROM test_effects WHERE key LIKE $1", f"{prefix}-%"
                    )
                )

            await wait_for(lambda: _at_least(done(), 150), timeout=60, what="a steady load before the kill")
            old = group.primary.port
            killed_at = time.time()
            group.kill_primary()
            await wait_for(
                lambda: _changed(_master_port(group), old), timeout=60, what="the sentinels promote"
            )
            out, err = await asyncio.to_thread(producer.communicate, timeout=180)
            assert producer.returncode == 0, err
            added = json.loads(out)
            acked: list[str] = added["acked"]

            # Drain: wait while jobs keep completing; stop when all are done or nothing moved for 15 s.
            last, still = -1, 0.0
            while (n := await done()) < len(acked) and still < 15:
                still = still + 0.5 if n == last else 0.0
                last = n
                await asyncio.sleep(0.5)
            rows = await tasks_db.fetch(
                "SELECT e.key, extract(epoch FROM e.at) AS at, (SELECT count(*) FROM test_attempts a WHERE a.key = e.key) AS n"
                " FROM test_effects e WHERE e.key LIKE $1",
                f"{prefix}-%",
            )
            effects = {r["key"]: r for r in rows}
            lost = sorted(set(acked) - set(effects))
            twice = sorted(k for k, r in effects.items() if r["n"] > 1)
            after = sorted(float(r["at"]) for r in rows if float(r["at"]) > killed_at)
            # Jobs in flight at the kill finish their effects at once (their completion is what fails), so the
            # pause is the longest gap between effects after the kill; processing resumed at its end.
            marks = [killed_at, *after]
            gap_end = max(range(1, len(marks)), key=lambda i: marks[i] - marks[i - 1], default=0)
            resume_s = marks[gap_end] - killed_at if after else float("inf")
            print(
                f"\nfailover: {len(acked)} adds acknowledged, {len(added['rejected'])} rejected; "
                f"resumed {resume_s:.1f}s after the kill; lost {len(lost)} {lost[:5]}; run twice {len(twice)}"
            )
            assert after, "no job completed after the failover"
            assert pool.proc.poll() is None, pool.text()
            # Every acknowledged add either ran or is counted lost (never replicated); none is stuck half-way.
            assert len(effects) + len(lost) == len(acked)
            assert "Traceback" not in pool.text()
        finally:
            pool.stop()


async def _at_least(count: Any, n: int) -> bool:
    return bool(await count >= n)


async def _changed(port: Any, old: int) -> bool:
    try:
        return bool(await port != old)
    except OSError:
        return False
