// Node BullMQ worker for bench/node_compare.py: a no-op processor, as the platform's Node workers run.
// usage: node bench_worker.mjs REDIS_URL QUEUE CONCURRENCY   (prints "ready" once connected)
import { Worker } from "bullmq";
import IORedis from "ioredis";

const [url, queueName, concurrency] = process.argv.slice(2);
const connection = new IORedis(url, { maxRetriesPerRequest: null });
const worker = new Worker(queueName, async () => null, {
  connection, concurrency: Number(concurrency), removeOnComplete: { count: 0 },
});
await worker.waitUntilReady();
console.log("ready");
const stop = async () => { await worker.close(); await connection.quit(); process.exit(0); };
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
