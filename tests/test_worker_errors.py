"""What a slot logs for bullmq's worker errors (pool/runtime.py `on_worker_error`): a lock that could not be
renewed is a warning only for a job the slot still runs; for a job that finished while the renewal was on its way
(dozens at once after a Redis outage) it is not an error at all."""

from __future__ import annotations

import logging

from pool.runtime import on_worker_error
from pool.telemetry import Telemetry


def test_a_lock_not_renewed_is_said_only_for_a_job_still_running(caplog) -> None:
    telemetry = Telemetry("q", "q(1)", 1)
    still_running = {"41"}
    with caplog.at_level(logging.DEBUG, logger="pool.runtime"):
        for job_id in ("40", "41", "42"):
            on_worker_error(
                telemetry, Exception(f"could not renew lock for job {job_id}"), still_running.__contains__
            )
        on_worker_error(telemetry, Exception("Connection closed by server."), still_running.__contains__)
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert said == [
        (
            "WARNING",
            "job 41 lost its lock (not renewed in time: Redis unreachable, or this process too busy for the queue's "
            "lockDuration): its finish here will be refused, and the stall check puts it back to wait (or fails it "
            "once it has stalled too often)",
        ),
        ("ERROR", "worker error: Connection closed by server."),
    ]
