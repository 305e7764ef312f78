// Node BullMQ worker for bench/node_compare.py: a no-op processor, as the platform's Node workers run; with
// AWAIT_MS, each job awaits that long (bench/io_bound.py's I/O-bound jobs).
// usage: node bench_worker.mjs REDIS_URL QUEUE CONCURRENCY [AWAIT_MS]   (prints "ready" once connected)
import { Worker } from "bullmq";
import IORedis from "ioredis";

const [url, queueName, concurrency, awaitMs] = process.argv.slice(2);
const wait = Number(awaitMs || 0);
const processor = wait ? () => new Promise((done) => setTimeout(() => done(null), wait)) : async () => null;
const connection = new IORedis(url, { maxRetriesPerRequest: null });
const worker = new Worker(queueName, processor, {
  connection, concurrency: Number(concurrency), removeOnComplete: { count: 0 },
});
await worker.waitUntilReady();
console.log("ready");
const stop = async () => { await worker.close(); await connection.quit(); process.exit(0); };
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
