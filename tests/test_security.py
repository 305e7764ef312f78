"""Security checks. The others live beside the feature they guard, each a real run:
- non-super-admin bulk job refused, nothing changed: test_super_admin_bulk.py::test_a_non_super_admin_actor_is_refused...
- cross-tenant jobs refused: test_user_management.py (invitation), test_task_notifications.py (task.assigned),
  test_identity_events.py (tenant.created);
- forged Stripe webhook refused, nothing changed: test_billing_payment_sync.py::test_webhooks_refund_duplicate_and_forged;
- identity DB writes refused for the worker's role: test_identity_events.py;
- supervisord control socket owner-only (0700): test_supervisord.py;
- secrets in no log across every chaos scenario: test_chaos.py, test_chaos_outages.py, test_chaos_fuzz.py.
Here: `ma-top --read-only` sends no write command to Redis or supervisord, whatever key is pressed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from bullmq import Queue
from redis.asyncio import Redis
from textual.css.query import NoMatches
from textual.widgets import DataTable

from devstack import engines
from pool.supervise import supervisord_env
from tests.support.processes import pool_env
from tests.support.supervisord import Supervisord
from tests.support.waits import wait_for
from tui.app import MaTop


@pytest.fixture
async def own_valkey(tmp_path: Path):
    """A Valkey of its own: INFO commandstats then counts only what ma-top (and this test) sent."""
    engine = engines.valkey(tmp_path / "valkey", persistent=False).start()
    client = Redis.from_url(engine.url, decode_responses=True)
    yield engine, client
    await client.aclose()
    engine.stop()


async def write_commands(client: Redis) -> dict[str, int]:
    stats = await client.info("commandstats")
    counts = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    table = await client.command()  # every command with its flags, as the server describes them
    writes = {}
    for name, calls in counts.items():
        flags = table.get(name.split("|")[0], {}).get("flags", [])
        if "write" in flags:
            writes[name] = calls
    assert counts, "commandstats saw ma-top's reads"
    return writes


def rows_in(app: MaTop, table_id: str) -> int:
    """Rows of the table `table_id` if the screen on top shows it (0 while another screen is up)."""
    try:
        return app.screen.query_one(f"#{table_id}", DataTable).row_count
    except NoMatches:
        return 0


async def refused(app: MaTop, what: str) -> None:
    await wait_for(lambda: app.message == f"read-only: {what} refused", what=f"{what} refused as read-only")


async def test_read_only_ma_top_sends_no_write_to_redis_or_supervisord(own_valkey, db_urls, tmp_path: Path):
    _engine, client = own_valkey
    for queue in ("billing-usage", "identity-events"):  # something to act on in every view
        q = Queue(queue, {"connection": client})
        await q.add("usage.aggregate", {"organizationId": "org_acme"}, {"delay": 600_000})
        failed = await q.add("usage.aggregate", {"organizationId": "org_acme"})
        await client.zadd(f"bull:{queue}:failed", {failed.id: 1})
        await client.lrem(f"bull:{queue}:wait", 0, failed.id)
        await client.hset(f"bull:{queue}:{failed.id}", mapping={"failedReason": "boom", "finishedOn": "1"})
    (tmp_path / "host").mkdir()
    sup = Supervisord(
        tmp_path / "host",
        supervisord_env(pool_env("redis://127.0.0.1:9", db_urls, MA_EXPORTER_PORT=str(engines.free_port()))),
    )
    try:
        await wait_for(sup.all_running, timeout=40, what="supervisord up")
        before_pids = {p["name"]: p["pid"] for p in sup.processes()}
        await client.config_resetstat()
        endpoint = f"unix://{tmp_path}/host/var/supervisor.sock"
        app = MaTop(client, [endpoint], refresh_s=0.3, read_only=True, journal_path=tmp_path / "audit.log")
        async with asyncio.timeout(90), app.run_test(size=(140, 40)) as pilot:
            await wait_for(lambda: rows_in(app, "queues") >= 2, what="both queues listed")
            await pilot.press("space")  # pause the queue under the cursor
            await refused(app, "pause/resume")
            await pilot.press("enter")  # the queue's failed jobs
            await wait_for(lambda: rows_in(app, "jobs") >= 1, what="the queue's failed job listed")
            await pilot.press("r")
            await refused(app, "requeue")
            for key in ("R", "y", "P", "y", "right", "R", "y", "enter", "escape", "escape"):
                await pilot.press(key)
            await pilot.press("3")  # processes
            await wait_for(lambda: rows_in(app, "processes") == len(before_pids), what="every process listed")
            await pilot.press("s")
            await refused(app, "restart process")
            for key in ("y", "x", "y", "a", "S", "y"):
                await pilot.press(key)
            await refused(app, "rolling restart")
            await pilot.press("5")  # failures
            await wait_for(lambda: rows_in(app, "failures") >= 1, what="the failure groups listed")
            await pilot.press("R")
            await refused(app, "requeue group")
            await pilot.press("y")
        assert await write_commands(client) == {}, "ma-top --read-only wrote to Redis"
        assert {p["name"]: p["pid"] for p in sup.processes()} == before_pids, (
            "a process was restarted or stopped"
        )
        assert not (tmp_path / "audit.log").exists() or (tmp_path / "audit.log").read_text() == ""
    finally:
        sup.stop()
