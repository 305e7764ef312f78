"""Traces across languages: a job a traced Node producer adds (BullMQ telemetry, npm bullmq-otel) continues the
producer's trace in the pool, one span per job, with child spans for the identity calls it makes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.node import node_add_traced
from tests.support.otlp import Receiver, Span
from tests.support.waits import settle, wait_for

Q = "identity-events"


@pytest.fixture
async def collector() -> Any:
    receiver = await Receiver().start()
    yield receiver
    await receiver.stop()


def traced_env(collector: Receiver) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}


def job_span(collector: Receiver, job_id: str) -> Span | None:
    spans = [s for s in collector.spans if s.attributes.get("messaging.message.id") == job_id]
    return spans[0] if spans else None


async def test_the_pools_span_continues_the_node_producers_trace_with_queue_name_id_and_attempt(
    redis, valkey, node_bullmq, start_pool, collector
):
    start_pool(Q, **traced_env(collector))
    produced = node_add_traced(node_bullmq, valkey.url, Q, "test.sleep", {"seconds": 0})
    assert produced["addSpanId"], produced  # bullmq-otel traced the add

    await settle(redis, Q, produced["jobId"])
    span = await wait_for(lambda: job_span(collector, produced["jobId"]), what="the job's span exported")

    assert span.trace_id == produced["traceId"], "the producer's trace goes on in the pool"
    assert span.parent_id == produced["addSpanId"], "a child of the producer's add span"
    assert span.name == f"process {Q} test.sleep" and span.service == "ma-worker"
    assert span.attributes["messaging.destination.name"] == Q
    assert span.attributes["bullmq.job.name"] == "test.sleep"
    assert span.attributes["bullmq.job.attempt"] == 1


async def test_identity_calls_made_by_a_job_are_child_spans_of_its_span(
    redis, valkey, node_bullmq, start_real_pool, collector
):
    start_real_pool("task-notifications", **traced_env(collector))
    task = f"task_{uuid.uuid4().hex[:8]}"
    produced = node_add_traced(
        node_bullmq,
        valkey.url,
        "task-notifications",
        "task.assigned",
        {
            "taskId": task,
            "organizationId": "org_acme",
            "tenantId": "org_acme_t1",
            "assigneeId": "user_acme_2",
            "assignedBy": "user_acme_1",
            "assignedAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        },
    )
    job = await settle(redis, "task-notifications", produced["jobId"])
    span = await wait_for(lambda: job_span(collector, produced["jobId"]), what="the job's span exported")
    assert span.trace_id == produced["traceId"], job.failedReason

    assert job.returnvalue["notified"] is True, job.failedReason

    def http_children() -> list[Span]:
        return [s for s in collector.spans if s.parent_id == span.span_id and s.name in ("POST", "GET")]

    children = await wait_for(http_children, what="identity calls as child spans of the job's span")
    assert all(c.trace_id == produced["traceId"] for c in children)
    assert any(
        "/v1/tasks/context" in str(c.attributes.get("url.full", c.attributes.get("http.url")))
        for c in children
    )
    database = [s for s in collector.spans if s.parent_id == span.span_id and "db.system" in s.attributes]
    assert database, f"database queries as child spans: {[(s.name, s.parent_id) for s in collector.spans]}"
