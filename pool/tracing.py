"""Traces across languages: a job added by a traced Node producer continues that trace in the pool.

Optional: only with the `otel` extra installed (`pip install 'ma-worker[otel]'`) and an OTLP endpoint configured
(`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; the SDK reads the other standard
`OTEL_*` variables itself). Otherwise `setup()` returns None and the dispatcher runs exactly as before.

Node BullMQ with telemetry (npm `bullmq-otel`) writes the producer's span context into the job's options as
`tm`, a JSON object of W3C trace-context headers (`{"traceparent": "00-<trace>-<span>-01"}`), unless the
producer set `omitContext` (`omc`). Each job gets one span, `process <queue> <job name>`, a child of that
context (a root when there is none), with the queue, job name, id and attempt. Calls made inside it get child
spans where instrumentation libraries provide them: httpx (identity, Supabase, and Stripe, whose client is
httpx here) and SQLAlchemy (both databases) when those instrumentations are installed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from bullmq import Job
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("pool.tracing")

SERVICE = "ma-worker"


class JobTracing:
    """One span per job, continuing the producer's trace."""

    def __init__(self, tracer: Any, provider: Any) -> None:
        from opentelemetry import propagate, trace

        self._tracer = tracer
        self._provider = provider
        self._propagate = propagate
        self._trace = trace

    def _parent(self, job: Job) -> Any:
        opts = job.opts or {}
        carrier = opts.get("tm")
        if not carrier or opts.get("omc"):
            return None
        try:
            headers = json.loads(carrier) if isinstance(carrier, str) else carrier
        except ValueError:
            return None
        return self._propagate.extract(headers) if isinstance(headers, dict) else None

    @contextmanager
    def job_span(self, queue: str, job: Job) -> Iterator[Any]:
        from bullmq import DelayedError
        from opentelemetry.trace import SpanKind, Status, StatusCode

        attributes = {
            "messaging.system": "bullmq",
            "messaging.operation": "process",
            "messaging.destination.name": queue,
            "messaging.message.id": str(job.id),
            "bullmq.job.name": job.name,
            "bullmq.job.attempt": job.attemptsMade + 1,
        }
        with self._tracer.start_as_current_span(
            f"process {queue} {job.name}",
            context=self._parent(job),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except DelayedError:
                span.set_attribute("bullmq.job.deferred", True)  # throttled: deferred, not failed
                raise
            except Exception as error:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, str(error)[:200]))
                raise

    def instrument_engines(self, engines: list[AsyncEngine]) -> None:
        try:
            from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
        except ImportError:
            return
        # The instrumentation declares sqlalchemy < 2.1 and otherwise refuses (logging an ERROR); it only listens
        # to the cursor events, which 2.1 keeps, and tests/test_tracing.py checks the spans it makes.
        SQLAlchemyInstrumentor().instrument(
            engines=[e.sync_engine for e in engines], tracer_provider=self._provider, skip_dep_check=True
        )

    def shutdown(self) -> None:
        self._provider.shutdown()  # flushes the spans not yet exported


def setup(endpoint: str | None) -> JobTracing | None:
    """Tracing when an OTLP endpoint is configured and the `otel` extra is installed; else None."""
    if not endpoint:
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("an OTLP endpoint is set but the otel extra is not installed: no traces")
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    try:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    except ImportError:
        pass
    log.info("tracing to %s", urlsplit(endpoint).netloc.rsplit("@", 1)[-1])  # never credentials
    return JobTracing(trace.get_tracer("ma-worker.pool"), provider)
