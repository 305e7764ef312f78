"""super-admin.bulk-job: privileged bulk activate/suspend with checkpoints and telemetry, and streamed exports."""

from __future__ import annotations

import asyncio
import csv
import gzip
import hashlib
import io
import json
import uuid
from pathlib import Path

import pytest
from bullmq import Job, Queue

from pool.contracts import BULK_JOBS_KEY, BULK_METRICS_CHANNEL, bulk_items_key
from tests.support.waits import run_job, settle, wait_for

Q = "super-admin.bulk-job"


@pytest.fixture
async def users(identity_db):
    """Fresh users of one organization, all active, with a tag of their own (ids and email domain)."""
    created: list[str] = []

    async def make(count: int, *, status: str = "active") -> tuple[str, list[str]]:
        tag = uuid.uuid4().hex[:8]
        ids = [f"u_{tag}_{n:03d}" for n in range(count)]
        await identity_db.executemany(
            "INSERT INTO users (id, email, full_name, status) VALUES ($1, $2, $3, $4)",
            [(uid, f"{uid}@{tag}.example", f'User "{n}", of {tag}', status) for n, uid in enumerate(ids)],
        )
        await identity_db.executemany(
            "INSERT INTO memberships (user_id, organization_id, role) VALUES ($1, 'org_initech', 'member')",
            [(u,) for u in ids],
        )
        created.extend(ids)
        return tag, ids

    return make


async def audit_counts(identity_db, bulk_job_id: str) -> dict[str, int]:
    rows = await identity_db.fetch(
        "SELECT target_id, count(*) AS n FROM audit_events"
        " WHERE details->>'bulkJobId' = $1 GROUP BY target_id",
        bulk_job_id,
    )
    return {r["target_id"]: r["n"] for r in rows}


async def statuses(identity_db, ids: list[str]) -> dict[str, str]:
    rows = await identity_db.fetch("SELECT id, status FROM users WHERE id = ANY($1::text[])", ids)
    return {r["id"]: r["status"] for r in rows}


def change(bulk_id: str, ids: list[str] | None = None, **extra) -> dict:
    body = {"bulkJobId": bulk_id, "actorId": "user_root", "target": "users", "reason": "abuse report 4711"}
    if ids is not None:
        body["ids"] = ids
    return {**body, **extra}


async def test_a_non_super_admin_actor_is_refused_and_nothing_changes(
    redis, start_real_pool, users, identity, identity_db
):
    _, ids = await users(3)
    start_real_pool(Q)
    bulk = f"bulk_{uuid.uuid4().hex[:8]}"
    job = await run_job(redis, Q, "bulk.suspend", change(bulk, ids, actorId="user_acme_1"))
    assert job.failedReason == "actorId user_acme_1 is not an active super admin; refused, nothing changed"
    assert job.attemptsMade == 1  # permanent: not retried
    job = await run_job(redis, Q, "bulk.export", {"bulkJobId": bulk, "actorId": "nobody", "target": "users"})
    assert job.failedReason == "actorId nobody is not a user at identity; refused, nothing changed"
    assert set((await statuses(identity_db, ids)).values()) == {"active"}
    assert await audit_counts(identity_db, bulk) == {}
    assert not any(k.startswith("POST /v1/admin/{target}") for k in identity.stats())


async def test_bad_selections_fail_with_a_reason_naming_the_field(redis, start_real_pool, identity):
    start_real_pool(Q)
    both = await run_job(redis, Q, "bulk.activate", change("b1", ["u1"], filter={"status": "active"}))
    assert (
        both.failedReason == "invalid payload for bulk.activate: payload: give exactly one of ids or filter"
    )
    empty = await run_job(redis, Q, "bulk.suspend", change("b2", filter={}))
    assert "filter needs at least one criterion" in empty.failedReason
    orgs = await run_job(
        redis, Q, "bulk.suspend", change("b3", target="organizations", filter={"emailDomain": "x.io"})
    )
    assert "filter.emailDomain applies to users, not organizations" in orgs.failedReason
    target = await run_job(redis, Q, "bulk.suspend", change("b4", ["u1"], target="groups"))
    assert target.failedReason.startswith("invalid payload for bulk.suspend: target: Input should be 'users'")


async def test_mixed_outcomes_are_logged_per_item_counted_and_listed(
    redis, start_real_pool, users, identity, identity_db
):
    _, ids = await users(5)
    pool = start_real_pool(Q)
    bulk = f"bulk_{uuid.uuid4().hex[:8]}"
    selection = [*ids, "u_missing_1", "user_root", ids[0], "u_missing_2"]  # a duplicate is applied once
    job = await run_job(redis, Q, "bulk.suspend", change(bulk, selection))
    result = job.returnvalue
    assert (result["total"], result["succeeded"], result["failed"]) == (8, 5, 3)
    reasons = {f["id"]: f["reason"] for f in result["failures"]}
    assert reasons == {
        "u_missing_1": "user u_missing_1 not found at identity",
        "u_missing_2": "user u_missing_2 not found at identity",
        "user_root": "identity rejected suspend users user_root: 409 cannot_suspend_super_admin",
    }
    assert set((await statuses(identity_db, ids)).values()) == {"suspended"}
    assert await statuses(identity_db, ["user_root"]) == {"user_root": "active"}
    assert await audit_counts(identity_db, bulk) == dict.fromkeys(ids, 1)
    lines = [line for line in pool.text().splitlines() if "Super admin bulk job operation failed" in line]
    assert len(lines) == 3
    for item, reason in reasons.items():
        assert sum(f"users={item} reason={reason}" in line for line in lines) == 1
    assert "test-service-role-key" not in pool.text()

    every = await run_job(redis, Q, "bulk.activate", change(f"{bulk}_b", ["u_missing_3", "u_missing_4"]))
    assert every.failedReason.startswith(
        f"every item of bulk job {bulk}_b failed (2): u_missing_3: user u_missing_3"
    )


async def test_a_bulk_job_failing_as_a_whole_logs_the_runbook_line_with_its_id_and_reason(
    redis, start_real_pool, users, identity, identity_db
):
    """Token refused on every admin call: each attempt of the job fails as a whole (not item by item), and a
    grep for the runbook's line finds each attempt with the bulk job id, whether it is retried, and why."""
    _, ids = await users(2)
    pool = start_real_pool(Q)
    identity.hook("POST", "/__faults", {"status": 401, "path": "/v1/admin/", "seconds": 120})
    bulk = f"bulk_{uuid.uuid4().hex[:8]}"
    job = await run_job(
        redis, Q, "bulk.suspend", change(bulk, ids), attempts=2, backoff={"type": "fixed", "delay": 100}
    )
    assert job.attemptsMade == 2 and "token" in job.failedReason.lower()

    lines = [ln for ln in pool.text().splitlines() if "Super admin bulk job operation failed" in ln]
    whole = [ln for ln in lines if f"bulkJobId={bulk} operation=suspend scope=job job={job.id}" in ln]
    assert len(whole) == 2, lines
    assert " try=1 will-retry reason=TokenRefused: " in whole[0]
    assert " try=2 failed reason=TokenRefused: " in whole[1]
    assert job.failedReason in whole[1]
    assert set((await statuses(identity_db, ids)).values()) == {"active"}
    assert "test-service-role-key" not in pool.text()

    refused = await run_job(
        redis, Q, "bulk.export", {"bulkJobId": f"{bulk}_x", "actorId": "nobody", "target": "users"}
    )
    assert (
        f"bulkJobId={bulk}_x operation=export scope=job job={refused.id} try=1 failed reason=actorId nobody"
        in (pool.text())
    )


async def test_subscribers_see_running_messages_and_the_final_one_with_consistent_counts(
    redis, start_real_pool, users, identity, identity_db
):
    _, ids = await users(40)
    identity.hook("POST", "/__latency", {"path": "/v1/admin/users", "seconds": 0.2})
    identity.fault(
        429, count=2, path="/v1/admin/users", retry_after=1
    )  # throttled once: deferred, not failed
    start_real_pool(Q, MA_BULK_ITEM_CONCURRENCY="4")
    bulk = f"bulk_{uuid.uuid4().hex[:8]}"
    messages: list[dict] = []
    pubsub = redis.pubsub()
    await pubsub.subscribe(BULK_METRICS_CHANNEL)

    async def listen() -> None:
        async for raw in pubsub.listen():
            if raw["type"] == "message":
                message = json.loads(raw["data"])
                if message["bulkJobId"] == bulk:
                    messages.append(message)

    listener = asyncio.create_task(listen())
    try:
        job = await run_job(redis, Q, "bulk.suspend", change(bulk, [*ids, "u_missing"]), timeout=60)
        await wait_for(lambda: messages and messages[-1]["status"] == "completed", what="the final message")
    finally:
        listener.cancel()
        await pubsub.aclose()
    assert job.returnvalue["succeeded"] == 40 and job.returnvalue["failed"] == 1
    assert job.attemptsMade == 1  # the completing run only: the throttle deferred it without burning one
    statuses_seen = [m["status"] for m in messages]
    assert statuses_seen.count("completed") == 1 and statuses_seen[-1] == "completed"
    assert "throttled" in statuses_seen
    assert statuses_seen.count("running") >= 2  # a start message per run, and about one a second between
    keys = {
        "bulkJobId",
        "jobId",
        "operation",
        "status",
        "total",
        "processed",
        "succeeded",
        "failed",
        "throughputPerSec",
        "startedAt",
        "updatedAt",
        "host",
        "pid",
    }
    for m in messages:
        assert keys <= m.keys()
        assert (
            m["processed"] == m["succeeded"] + m["failed"]
            and m["total"] == 41
            and m["operation"] == "suspend"
        )
        assert m["jobId"] == job.id
    processed = [m["processed"] for m in messages]
    assert processed == sorted(processed) and processed[-1] == 41
    assert len({m["startedAt"] for m in messages}) == 1  # the resumed run keeps the bulk job's start
    last = json.loads(await redis.hget(BULK_JOBS_KEY, bulk))
    assert last["status"] == "completed" and last["processed"] == 41
    assert await audit_counts(identity_db, bulk) == dict.fromkeys(ids, 1)


async def test_sigkill_mid_job_then_every_item_is_applied_exactly_once(
    redis, start_pool, users, identity, identity_db
):
    tag, ids = await users(60)
    # 0.4 s an item, 8 at a time: the job takes ~3 s, so the kill after 15 items lands mid-job even when this test
    # process lags a second or two behind on a busy machine.
    identity.hook("POST", "/__latency", {"path": "/v1/admin/users", "seconds": 0.4})
    env = {"MA_QUEUE_TABLE": "tests.support.table:REAL_FAST", "IDENTITY_BASE_URL": identity.url}
    first = start_pool(Q, **env)
    bulk = f"bulk_{uuid.uuid4().hex[:8]}"
    queue = Queue(Q, {"connection": redis})
    added = await queue.add(
        "bulk.suspend", change(bulk, filter={"emailDomain": f"{tag}.example"}), {"attempts": 3}
    )

    async def progressed() -> int:
        job = await Job.fromId(queue, added.id)
        return isinstance(job.progress, dict) and job.progress.get("processed", 0) >= 15

    await wait_for(progressed, timeout=30, what="15 items done")
    # Hold Valkey's writes for a second before the kill: identity keeps answering, only the checkpoints wait. An
    # item keeps its slot until its checkpoint is saved, so no more than the 8 in flight get applied unsaved.
    await redis.execute_command("CLIENT PAUSE", 10_000, "WRITE")
    try:
        await asyncio.sleep(1.0)
        applied = len(await audit_counts(identity_db, bulk))
        saved = (await Job.fromId(queue, added.id)).progress["processed"]
        first.proc.kill()
        first.proc.wait()
    finally:
        await redis.execute_command("CLIENT UNPAUSE")
    assert 15 <= saved <= applied < 60
    assert applied - saved <= 8, (
        f"{applied} items applied, {saved} saved: the kill leaves more than 8 to replay"
    )
    start_pool(Q, **env)
    job = await settle(redis, Q, added.id, timeout=60)
    assert job.finishedOn and job.returnvalue["total"] == 60 and job.returnvalue["succeeded"] == 60
    assert job.returnvalue["resumedAfter"] >= 15
    assert await audit_counts(identity_db, bulk) == dict.fromkeys(ids, 1)  # each item applied exactly once
    assert set((await statuses(identity_db, ids)).values()) == {"suspended"}
    stats = identity.stats()
    assert stats["bulk suspend applied"] == 60
    # Only the items in flight at the kill (applied or not, their progress not saved yet) are sent again, and
    # identity answers them from the idempotency key: at most MA_BULK_ITEM_CONCURRENCY.
    assert stats.get("idempotent replays", 0) <= 8
    assert not await redis.exists(bulk_items_key(added.id))


async def test_export_streams_the_selection_into_a_gzip_file_with_its_checksum(
    redis, start_real_pool, users, identity_db, tmp_path: Path
):
    tag, ids = await users(25)
    await identity_db.execute("UPDATE users SET status = 'suspended' WHERE id = $1", ids[3])
    export_dir = tmp_path / "exports"
    start_real_pool(Q, MA_EXPORT_DIR=str(export_dir))
    bulk = f"bulk_{uuid.uuid4().hex[:8]}"
    body = {
        "bulkJobId": bulk,
        "actorId": "user_root",
        "target": "users",
        "filter": {"emailDomain": f"{tag}.example", "status": "active"},
    }
    as_csv = (await run_job(redis, Q, "bulk.export", {**body, "format": "csv"})).returnvalue
    as_jsonl = (await run_job(redis, Q, "bulk.export", {**body, "format": "jsonl"})).returnvalue
    expected = await identity_db.fetch(
        "SELECT id, email, full_name, status, is_super_admin FROM users"
        " WHERE id = ANY($1::text[]) AND status = 'active' ORDER BY id",
        ids,
    )
    assert len(expected) == 24
    for result in (as_csv, as_jsonl):
        path = Path(result["path"])
        data = path.read_bytes()
        assert result["rows"] == 24 and result["bytes"] == len(data)
        assert result["sha256"] == hashlib.sha256(data).hexdigest()
        assert path.parent == export_dir.resolve() and path.name.startswith(bulk)
    rows = list(csv.DictReader(io.StringIO(gzip.decompress(Path(as_csv["path"]).read_bytes()).decode())))
    assert [(r["id"], r["email"], r["fullName"], r["status"], r["isSuperAdmin"]) for r in rows] == [
        (e["id"], e["email"], e["full_name"], e["status"], "false") for e in expected
    ]
    objects = [json.loads(line) for line in gzip.decompress(Path(as_jsonl["path"]).read_bytes()).splitlines()]
    assert [(o["id"], o["fullName"], o["isSuperAdmin"]) for o in objects] == [
        (e["id"], e["full_name"], False) for e in expected
    ]
    assert all(o["createdAt"].endswith("+00:00") and "T" in o["createdAt"] for o in objects)
    assert all(r["createdAt"].endswith("+00") for r in rows)
    assert sorted(p.name for p in export_dir.iterdir()) == sorted(
        [f"{bulk}-users.csv.gz", f"{bulk}-users.jsonl.gz"]
    )
    last = json.loads(await redis.hget(BULK_JOBS_KEY, bulk))
    assert (last["operation"], last["status"], last["processed"], last["total"]) == (
        "export",
        "completed",
        24,
        24,
    )


async def test_export_chunks_join_to_exactly_the_rows_in_order(users, identity_db):
    """The export query's chunking (keyset steps of N rows) neither drops nor repeats rows at chunk edges."""
    from sqlalchemy import text

    from handlers.bulk.export import export_sql, positional
    from handlers.bulk.selection import where_clause
    from handlers.super_admin_bulk import BulkFilter

    tag, ids = await users(23)
    where, params = where_clause("users", BulkFilter.model_validate({"emailDomain": f"{tag}.example"}))
    for chunk_rows in (1, 7, 23, 100):
        sql, args = positional(text(export_sql("users", "csv", where, chunk_rows)), params)
        chunks = await identity_db.fetch(sql, *args)
        assert len(chunks) == -(-23 // chunk_rows)
        lines = b"".join(body for body, _ in chunks).decode().splitlines()
        assert [line.split(",")[0].strip('"') for line in lines] == sorted(ids)
        assert sum(n for _, n in chunks) == 23


async def test_an_export_to_a_full_disk_fails_naming_enospc_leaves_no_file_and_is_retried(
    redis, start_real_pool, users, tmp_path: Path
):
    from tests.support.disk import full_disk

    tag, _ = await users(25)
    disk = tmp_path / "disk"
    with full_disk(disk) as free:
        pool = start_real_pool(Q, MA_EXPORT_DIR=str(disk))
        bulk = f"bulk_{uuid.uuid4().hex[:8]}"
        body = {
            "bulkJobId": bulk,
            "actorId": "user_root",
            "target": "users",
            "filter": {"emailDomain": f"{tag}.example"},
        }
        queue = Queue(Q, {"connection": redis})
        added = await queue.add("bulk.export", {**body, "format": "csv"})

        async def first_attempt_failed() -> Job | None:
            job = await Job.fromId(queue, added.id)
            return job if job is not None and job.attemptsMade >= 1 else None

        job = await wait_for(first_attempt_failed, what="the first attempt failed")
        assert await queue.getJobState(added.id) in ("delayed", "wait")  # retried later, not failed for good
        final = f"{bulk}-users.csv.gz"
        assert "disk full (ENOSPC: No space left on device)" in job.failedReason
        assert str(disk / final) in job.failedReason and "retried later" in job.failedReason
        assert sorted(p.name for p in disk.iterdir()) == [
            ".filler"
        ]  # no partial file, nothing under the name

        free()
        done = await settle(redis, Q, added.id, timeout=60)
        assert done.returnvalue is not None, done.failedReason
        assert done.returnvalue["rows"] == 25 and Path(done.returnvalue["path"]) == (disk / final).resolve()
        assert sorted(p.name for p in disk.iterdir()) == [final]
        assert pool.proc.poll() is None
