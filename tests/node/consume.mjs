// A Node BullMQ worker: reads COUNT jobs from QUEUE and prints what it saw as JSON lines.
// usage: node consume.mjs REDIS_URL QUEUE COUNT TIMEOUT_MS
import { Worker } from "bullmq";
import IORedis from "ioredis";

const [url, queueName, count, timeoutMs] = process.argv.slice(2);
const connection = new IORedis(url, { maxRetriesPerRequest: null });
let seen = 0;
const timer = setTimeout(async () => { console.error("timeout"); process.exit(3); }, Number(timeoutMs));
const worker = new Worker(queueName, async (job) => {
  console.log(JSON.stringify({ id: job.id, name: job.name, data: job.data, attempts: job.opts.attempts,
                               backoff: job.opts.backoff, delay: job.opts.delay }));
  return { seenBy: "node" };
}, { connection });
worker.on("completed", async () => {
  if (++seen >= Number(count)) {
    clearTimeout(timer);
    await worker.close();
    await connection.quit();
  }
});
