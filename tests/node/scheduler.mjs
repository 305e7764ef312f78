// A Node BullMQ producer upserting a job scheduler, as a Node service schedules a recurring job.
// usage: node scheduler.mjs REDIS_URL QUEUE SCHEDULER_ID '{"pattern":..,"tz":..}|{"every":ms}' JOB_NAME '{data}'
//        -> prints the scheduler's first job (id, delay) as JSON
import { Queue } from "bullmq";
import IORedis from "ioredis";

const [url, queueName, schedulerId, repeatJson, name, dataJson] = process.argv.slice(2);
const connection = new IORedis(url, { maxRetriesPerRequest: null });
const queue = new Queue(queueName, { connection });
const job = await queue.upsertJobScheduler(schedulerId, JSON.parse(repeatJson), {
  name,
  data: JSON.parse(dataJson || "{}"),
});
console.log(JSON.stringify({ id: job.id, delay: job.delay }));
await queue.close();
await connection.quit();
