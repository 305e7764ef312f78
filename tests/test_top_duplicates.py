"""Duplicate processing: the same payload under two job ids, both run, is a `duplicates` finding naming the ids
(in `ma-top --once --json` and on ma-top's first screen), distinct payloads are none, and the finding clears
when those jobs leave retention or the hour. Job detail shows BullMQ's deduplication id and the payload's
idempotency key."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bullmq import Queue
from textual.widgets import DataTable, Static

from pool.monitor import queries
from pool.monitor.duplicates import DuplicateGroup, duplicate_findings, duplicate_groups, with_duplicates
from pool.monitor.findings import Finding
from pool.queue_table import QUEUES
from tests.support.exporter import value
from tests.support.node import node_add
from tests.support.top import once
from tests.support.waits import settle, wait_for
from tui.app import MaTop
from tui.screens.job_detail import JobScreen

Q = "identity-events"


def duplicates(snap: dict[str, Any]) -> list[dict[str, str]]:
    return [f for f in snap["findings"] if f["kind"] == "duplicates"]


def test_duplicate_groups_make_one_finding_per_queue_with_sample_ids_and_none_without():
    groups = [
        DuplicateGroup("billing-usage", "usage.aggregate", ("7", "3", "2")),
        DuplicateGroup("billing-usage", "usage.aggregate", ("9", "8")),
        DuplicateGroup(Q, "organization.created", ("b", "a")),
    ]
    usage, org = duplicate_findings(groups)
    assert (usage.kind, usage.subject, usage.severity) == ("duplicates", "billing-usage", "warning")
    assert "2 group(s), 5 jobs" in usage.evidence and "usage.aggregate ids 7, 3, 2" in usage.evidence
    assert usage.goto == "job:billing-usage:7"
    assert org.goto == f"job:{Q}:b" and "ids b, a" in org.evidence
    assert duplicate_findings([]) == []
    critical = Finding("critical", "no-workers", Q, "c", "e", "a")
    assert with_duplicates([critical], [usage]) == [critical, usage]
    assert with_duplicates([], [usage]) == [usage]


async def test_same_payload_under_two_ids_is_a_duplicates_finding_until_the_jobs_leave(
    redis, valkey, start_pool, node_bullmq, tmp_path, exporter
):
    start_pool(Q)
    queue = Queue(Q, {"connection": redis})

    def add(jobs: list[dict[str, Any]]) -> list[str]:
        return node_add(node_bullmq, valkey.url, Q, jobs)

    distinct = await asyncio.to_thread(
        add,
        [
            {"name": "test.sleep", "data": {"seconds": 0, "org": f"org_{i}"}, "opts": {"jobId": f"d{i}"}}
            for i in range(3)
        ],
    )
    for job_id in distinct:
        await settle(redis, Q, job_id)
    assert duplicates(await asyncio.to_thread(once, valkey.url, tmp_path)) == []

    same = {"seconds": 0, "org": "org_twice"}
    ids = await asyncio.to_thread(
        add,
        [{"name": "test.sleep", "data": same, "opts": {"jobId": job_id}} for job_id in ("dup-a", "dup-b")],
    )
    for job_id in ids:
        await settle(redis, Q, job_id)
    (found,) = duplicates(await asyncio.to_thread(once, valkey.url, tmp_path))
    assert found["subject"] == Q and "1 group(s), 2 jobs" in found["evidence"]
    assert "dup-a" in found["evidence"] and "dup-b" in found["evidence"]
    assert found["goto"] in (f"job:{Q}:dup-a", f"job:{Q}:dup-b")
    # the exporter runs the same check on its own timer: ma_finding{kind="duplicates"}
    scraped = exporter()
    labels = {"kind": "duplicates", "subject": Q, "severity": "warning"}
    await wait_for(
        lambda: value(scraped.scrape(), "ma_finding", **labels) == 1.0, what="the exporter's finding"
    )
    assert value(scraped.scrape(), "ma_exporter_source_up", source="duplicates") == 1.0

    # out of the hour: the same jobs compared an hour later are no finding
    assert await duplicate_groups(redis, [Q], now_ms=time.time() * 1000 + 3_700_000) == []
    # out of retention: gone from Redis, the finding clears
    await queue.remove("dup-a")
    assert duplicates(await asyncio.to_thread(once, valkey.url, tmp_path)) == []


async def test_ma_top_shows_the_duplicates_badge_from_its_background_check(redis, start_pool, tmp_path):
    start_pool(Q)
    queue = Queue(Q, {"connection": redis})
    for job_id in ("x-1", "x-2"):
        await queue.add("test.sleep", {"seconds": 0, "org": "org_same"}, {"jobId": job_id})
    for job_id in ("x-1", "x-2"):
        await settle(redis, Q, job_id)
    app = MaTop(redis, [], refresh_s=0.3, journal_path=tmp_path / "audit.log")
    async with asyncio.timeout(60), app.run_test(size=(160, 40)):

        def badge() -> str:
            table = app.screen.query_one(DataTable)
            rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
            return next((r[-1] for r in rows if r[0] == Q), "")

        await wait_for(lambda: "DUPLICATES" in badge(), what="the DUPLICATES badge")
        (found,) = [f for f in app.state.findings if f.kind == "duplicates"]
        assert "x-1" in found.evidence and "x-2" in found.evidence


async def test_job_detail_shows_the_dedup_id_and_the_idempotency_key(redis, valkey, node_bullmq, tmp_path):
    queue = "user-management-jobs"
    data = {
        "invitationId": "inv_42",
        "organizationId": "org_a",
        "email": "a@example.com",
        "role": "member",
        "invitedBy": "usr_1",
    }
    (job_id,) = await asyncio.to_thread(
        node_add,
        node_bullmq,
        valkey.url,
        queue,
        [{"name": "invitation.send", "data": data, "opts": {"deduplication": {"id": "invite-inv_42"}}}],
    )
    detail = await queries.job_detail(redis, queue, job_id)
    assert detail is not None
    assert detail["dedupId"] == "invite-inv_42" and detail["idempotencyKey"] == "invitationId=inv_42"
    assert QUEUES[queue].idempotency_key("session.cleanup", {"olderThanDays": 30}) is None

    app = MaTop(redis, [], refresh_s=0.3, journal_path=tmp_path / "audit.log")
    async with asyncio.timeout(60), app.run_test(size=(160, 40)) as pilot:
        await app.push_screen(JobScreen(queue, job_id))
        await pilot.pause()
        text = lambda: str(app.screen.query_one("#job", Static).render())  # noqa: E731
        await wait_for(lambda: "dedup id invite-inv_42" in text(), what="the dedup id in the detail")
        assert f"job id {job_id}" in text() and "idempotency key invitationId=inv_42" in text()
