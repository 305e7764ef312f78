// A Node BullMQ producer with BullMQ's telemetry (npm bullmq-otel), as a traced Node service adds jobs.
// usage: node produce_traced.mjs REDIS_URL QUEUE NAME DATA_JSON
//   -> prints {"jobId", "traceId", "requestSpanId", "addSpanId"}: the ids of the producer's spans, recorded by an
//      in-memory exporter, so a test can check that the pool's span continues this trace.
import { context, trace } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";
import { Queue } from "bullmq";
import { BullMQOtel } from "bullmq-otel";
import IORedis from "ioredis";

const exporter = new InMemorySpanExporter();
const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
provider.register(); // W3C trace context propagator + async context manager

const [url, queueName, name, dataJson] = process.argv.slice(2);
const connection = new IORedis(url, { maxRetriesPerRequest: null });
const queue = new Queue(queueName, { connection, telemetry: new BullMQOtel("ma-test-producer") });
const tracer = trace.getTracer("ma-test-producer");
const request = tracer.startSpan("POST /v1/organizations");
const job = await context.with(trace.setSpan(context.active(), request), () =>
  queue.add(name, JSON.parse(dataJson)),
);
request.end();
await provider.forceFlush();
const add = exporter.getFinishedSpans().find((s) => s.name.startsWith("add"));
console.log(
  JSON.stringify({
    jobId: job.id,
    traceId: request.spanContext().traceId,
    requestSpanId: request.spanContext().spanId,
    addSpanId: add ? add.spanContext().spanId : null,
    spans: exporter.getFinishedSpans().map((s) => s.name),
  }),
);
await queue.close();
await connection.quit();
await provider.shutdown();
