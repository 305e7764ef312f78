"""bulk.export to S3 (MA_EXPORT_URL) on a real S3-compatible server (moto's server mode, as `ma-worker dev` runs
it): the object's contents and checksum, a download URL that needs no credentials, and a failure in the middle
of the upload that leaves neither an object nor an unfinished upload behind, also when the job is retried."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from bullmq import Queue

from devstack.s3_server import DEV_BUCKET, S3Server
from pool.monitor.queries import job_detail
from tests.support.paths import BIN, ROOT
from tests.support.processes import pool_env
from tests.support.waits import run_job, settle, wait_for

Q = "super-admin.bulk-job"
PART_MIB = 5  # S3's smallest part (moto enforces it too)


def s3_env(server: S3Server, prefix: str) -> dict[str, str]:
    """The pool's S3 settings, with a secret of this test's own to look for in logs and results."""
    return {**server.env(prefix=prefix), "AWS_SECRET_ACCESS_KEY": f"s3cr3t-{uuid.uuid4().hex}"}


def uploads(server: S3Server, prefix: str) -> list[dict]:
    listed = server.client().list_multipart_uploads(Bucket=DEV_BUCKET, Prefix=prefix + "/")
    return listed.get("Uploads", [])


def objects(server: S3Server, prefix: str) -> list[str]:
    listed = server.client().list_objects_v2(Bucket=DEV_BUCKET, Prefix=prefix + "/")
    return [o["Key"] for o in listed.get("Contents", [])]


@contextmanager
def paused(server: S3Server) -> Iterator[None]:
    """The S3 server stopped (SIGSTOP): every request to it waits, as with a store that has stalled."""
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)


@pytest.fixture(scope="module")
async def wide_users(db_urls) -> Iterator[tuple[str, int]]:
    """Users whose export compresses to several 5 MiB parts (random names), removed after the module."""
    import asyncpg

    tag, count = uuid.uuid4().hex[:8], 80_000
    conn = await asyncpg.connect(db_urls.admin)
    await conn.execute(
        "INSERT INTO users (id, email, full_name, status)"
        " SELECT 'w_' || $1 || '_' || lpad(g::text, 6, '0'), 'w' || g || '@' || $1 || '.example',"
        " (SELECT string_agg(md5(random()::text || g::text || n::text), '') FROM generate_series(1, 20) n),"
        " 'active' FROM generate_series(1, $2::int) g",
        tag,
        count,
    )
    yield tag, count
    await conn.execute("DELETE FROM users WHERE id LIKE 'w\\_' || $1 || '\\_%'", tag)
    await conn.close()


async def test_an_export_to_s3_is_the_selection_gzipped_with_its_checksum_and_a_download_url(
    redis, start_real_pool, identity_db, s3_server
):
    tag = uuid.uuid4().hex[:8]
    ids = [f"s3_{tag}_{n:03d}" for n in range(25)]
    await identity_db.executemany(
        "INSERT INTO users (id, email, full_name, status) VALUES ($1, $2, $3, 'active')",
        [(uid, f"{uid}@{tag}.example", f'User "{n}", of {tag}') for n, uid in enumerate(ids)],
    )
    prefix = f"t-{tag}"
    env = s3_env(s3_server, prefix)
    pool = start_real_pool(Q, **env)
    bulk = f"bulk_{tag}"
    body = {
        "bulkJobId": bulk,
        "actorId": "user_root",
        "target": "users",
        "filter": {"emailDomain": f"{tag}.example"},
    }

    job = await run_job(redis, Q, "bulk.export", {**body, "format": "csv"})

    result = job.returnvalue
    key = f"{prefix}/{bulk}-users.csv.gz"
    assert job.failedReason is None and result["url"] == f"s3://{DEV_BUCKET}/{key}" and "path" not in result
    stored = s3_server.client().get_object(Bucket=DEV_BUCKET, Key=key)["Body"].read()
    assert result["rows"] == 25 and result["bytes"] == len(stored)
    assert result["sha256"] == hashlib.sha256(stored).hexdigest()
    async with httpx.AsyncClient() as http:  # the presigned URL is all a downloader needs
        download = await http.get(result["presignedUrl"])
    assert download.status_code == 200 and download.content == stored
    assert "X-Amz-Expires=86400" in result["presignedUrl"] and result["expiresAt"].endswith("+00:00")
    rows = list(csv.DictReader(io.StringIO(gzip.decompress(stored).decode())))
    assert [(r["id"], r["email"], r["fullName"]) for r in rows] == [
        (uid, f"{uid}@{tag}.example", f'User "{n}", of {tag}') for n, uid in enumerate(ids)
    ]
    assert uploads(s3_server, prefix) == [] and objects(s3_server, prefix) == [key]
    secret = env["AWS_SECRET_ACCESS_KEY"]
    assert secret not in json.dumps(result) and secret not in pool.text()
    assert f"25 users rows, {len(stored)} bytes to s3://{DEV_BUCKET}/{key}" in pool.text()
    assert "X-Amz-Signature" not in pool.text()  # the download URL is the caller's, not the log's
    shown = (await job_detail(redis, Q, job.id))["returnvalue"]  # what ma-top's job detail shows
    assert shown["presignedUrl"] == "***" and shown["url"] == result["url"]

    nothing = {**body, "filter": {"emailDomain": f"none-{tag}.example"}, "format": "jsonl"}
    empty = (await run_job(redis, Q, "bulk.export", nothing)).returnvalue  # one small part: still an object
    stored = (
        s3_server.client().get_object(Bucket=DEV_BUCKET, Key=f"{prefix}/{bulk}-users.jsonl.gz")["Body"].read()
    )
    assert empty["rows"] == 0 and empty["bytes"] == len(stored) and gzip.decompress(stored) == b""


async def stall_upload_and_cut_the_database(
    server: S3Server, identity_db, prefix: str, ignore: set[str]
) -> str:
    """Once the export's first part is stored: stall the store (the export blocks within two parts, with rows
    still unread), end the export's database session, and let the store go on: the next fetch of rows fails
    in the middle of the upload. Returns the upload's id."""
    client = server.client()
    upload = await wait_for(
        lambda: [u for u in uploads(server, prefix) if u["UploadId"] not in ignore],
        timeout=60,
        every=0.02,
        what="the export's multipart upload",
    )
    key, upload_id = upload[0]["Key"], upload[0]["UploadId"]
    await wait_for(
        lambda: client.list_parts(Bucket=DEV_BUCKET, Key=key, UploadId=upload_id).get("Parts"),
        timeout=60,
        every=0.02,
        what="the export's first part",
    )
    with paused(server):
        ended = await wait_for(
            lambda: identity_db.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE query LIKE '%WITH RECURSIVE chunk%' AND pid <> pg_backend_pid()"
            ),
            what="the export's database session",
        )
        assert ended == 1
    return upload_id


async def test_a_failure_mid_upload_leaves_no_object_and_no_unfinished_upload(
    redis, start_real_pool, identity_db, s3_server, wide_users
):
    tag, _ = wide_users
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    env = s3_env(s3_server, prefix)
    pool = start_real_pool(Q, MA_EXPORT_PART_MIB=str(PART_MIB), **env)
    body = {
        "bulkJobId": f"bulk_{prefix}",
        "actorId": "user_root",
        "target": "users",
        "filter": {"emailDomain": f"{tag}.example"},
    }
    job = await Queue(Q, {"connection": redis}).add("bulk.export", body, {"attempts": 1})

    upload_id = await stall_upload_and_cut_the_database(s3_server, identity_db, prefix, ignore=set())

    failed = await settle(redis, Q, job.id, timeout=60)
    assert failed.failedReason and failed.finishedOn and not failed.returnvalue
    assert objects(s3_server, prefix) == []
    assert uploads(s3_server, prefix) == []
    served = s3_server.log.read_text(errors="replace")  # the store's access log
    assert f'uploadId={upload_id}&partNumber=1 HTTP/1.1" 200' in served  # parts had gone up, and
    assert (
        f"DELETE /{DEV_BUCKET}/{prefix}/bulk_{prefix}-users.csv.gz?uploadId={upload_id} " in served
    )  # aborted
    assert "this attempt did not finish" in pool.text() and env["AWS_SECRET_ACCESS_KEY"] not in pool.text()


async def test_a_retried_export_restarts_cleanly_and_completes_the_object(
    redis, start_real_pool, identity_db, s3_server, wide_users
):
    tag, count = wide_users
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    bulk = f"bulk_{prefix}"
    key = f"{prefix}/{bulk}-users.csv.gz"
    client = s3_server.client()  # an earlier run killed mid-upload left its upload and a part behind
    stale = client.create_multipart_upload(Bucket=DEV_BUCKET, Key=key)["UploadId"]
    client.upload_part(Bucket=DEV_BUCKET, Key=key, UploadId=stale, PartNumber=1, Body=b"x" * (PART_MIB << 20))
    env = s3_env(s3_server, prefix)
    pool = start_real_pool(Q, MA_EXPORT_PART_MIB=str(PART_MIB), **env)
    body = {
        "bulkJobId": bulk,
        "actorId": "user_root",
        "target": "users",
        "filter": {"emailDomain": f"{tag}.example"},
    }
    opts = {"attempts": 2, "backoff": {"type": "fixed", "delay": 200}}
    job = await Queue(Q, {"connection": redis}).add("bulk.export", body, opts)

    failed_upload = await stall_upload_and_cut_the_database(s3_server, identity_db, prefix, ignore={stale})

    done = await settle(redis, Q, job.id, timeout=120)
    assert done.attemptsMade == 2 and done.returnvalue, done.failedReason
    result = done.returnvalue
    assert uploads(s3_server, prefix) == [] and objects(s3_server, prefix) == [key]
    stored = client.get_object(Bucket=DEV_BUCKET, Key=key)["Body"].read()
    assert result["bytes"] == len(stored) and result["sha256"] == hashlib.sha256(stored).hexdigest()
    assert len(stored) > 2 * (PART_MIB << 20)  # several parts, joined once each, in order
    lines = gzip.decompress(stored).decode().splitlines()
    expected = [
        r["id"]
        for r in await identity_db.fetch(
            "SELECT id FROM users WHERE email LIKE '%@' || $1 || '.example' ORDER BY id", tag
        )
    ]
    assert result["rows"] == count == len(expected) and len(lines) == count + 1
    assert [line.split(",")[0].strip('"') for line in lines[1:]] == expected
    log = pool.text()
    assert (
        f"aborted the upload {stale} of s3://{DEV_BUCKET}/{key}: an earlier attempt left it unfinished" in log
    )
    assert (
        f"aborted the upload {failed_upload} of s3://{DEV_BUCKET}/{key}: this attempt did not finish" in log
    )
    assert env["AWS_SECRET_ACCESS_KEY"] not in log


async def test_an_export_cancelled_by_a_forced_shutdown_aborts_its_upload(
    redis, start_real_pool, s3_server, wide_users
):
    tag, _ = wide_users
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    pool = start_real_pool(
        Q, MA_EXPORT_PART_MIB=str(PART_MIB), MA_SHUTDOWN_GRACE="1", **s3_env(s3_server, prefix)
    )
    body = {
        "bulkJobId": f"bulk_{prefix}",
        "actorId": "user_root",
        "target": "users",
        "filter": {"emailDomain": f"{tag}.example"},
    }
    await Queue(Q, {"connection": redis}).add("bulk.export", body, {"attempts": 1})
    upload = await wait_for(lambda: uploads(s3_server, prefix), timeout=60, every=0.02, what="the upload")
    key, upload_id = upload[0]["Key"], upload[0]["UploadId"]
    client = s3_server.client()
    await wait_for(
        lambda: client.list_parts(Bucket=DEV_BUCKET, Key=key, UploadId=upload_id).get("Parts"),
        timeout=60,
        every=0.02,
        what="the export's first part",
    )

    with paused(s3_server):  # the export cannot finish within the grace
        pool.proc.terminate()
        await wait_for(lambda: "forcing close" in pool.text(), what="the forced close")
    assert pool.proc.wait(30) == 0

    assert uploads(s3_server, prefix) == [] and objects(s3_server, prefix) == []
    assert (
        f"aborted the upload {upload_id} of s3://{DEV_BUCKET}/{key}: this attempt did not finish"
        in pool.text()
    )


def test_a_malformed_export_url_stops_the_pool_at_start_naming_it(valkey, db_urls):
    env = pool_env(valkey.url, db_urls, MA_EXPORT_URL="https://bucket/exports")
    ran = subprocess.run(
        [str(BIN / "ma-worker"), "run", Q], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 78
    assert "MA_EXPORT_URL is malformed" in ran.stderr and "s3://bucket" in ran.stderr


def test_a_pool_process_without_an_export_url_never_loads_botocore():
    """botocore and aiobotocore cost a process ~40 MB: only slots that export to S3 load them."""
    probe = "import sys, pool.runtime, pool.queue_table; print(sorted(m for m in sys.modules if 'boto' in m))"
    ran = subprocess.run(
        [str(BIN / "python"), "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert ran.stdout.strip() == "[]"
