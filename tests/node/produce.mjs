// A Node BullMQ producer, as the platform's Node services add jobs.
// usage: node produce.mjs REDIS_URL QUEUE '[{"name":..,"data":..,"opts":..}, ...]'  -> prints the job ids as JSON
import { Queue } from "bullmq";
import IORedis from "ioredis";

const [url, queueName, jobsJson] = process.argv.slice(2);
const connection = new IORedis(url, { maxRetriesPerRequest: null });
const queue = new Queue(queueName, { connection });
const ids = [];
for (const job of JSON.parse(jobsJson)) {
  const added = await queue.add(job.name, job.data, job.opts || {});
  ids.push(added.id);
}
console.log(JSON.stringify(ids));
await queue.close();
await connection.quit();
