// Many failed jobs, fast, the way they pile up in production: a Node producer adds them (addBulk, one
// attempt each), then a Node worker fails every one with a reason taken from its data (`data.error`).
// usage: node fail_many.mjs REDIS_URL QUEUE JOBS_FILE TIMEOUT_MS
//   JOBS_FILE: JSON [{"name":..,"data":{.., "error": "reason"}, "opts"?:..}, ...]  -> prints the job ids as JSON
import { readFileSync } from "node:fs";
import { Queue, Worker } from "bullmq";
import IORedis from "ioredis";

const [url, queueName, jobsFile, timeoutMs] = process.argv.slice(2);
const jobs = JSON.parse(readFileSync(jobsFile, "utf8"));
const connection = new IORedis(url, { maxRetriesPerRequest: null });
const timer = setTimeout(() => { console.error("timeout"); process.exit(3); }, Number(timeoutMs));
const queue = new Queue(queueName, { connection });
const ids = [];
for (let i = 0; i < jobs.length; i += 1000) {
  const added = await queue.addBulk(
    jobs.slice(i, i + 1000).map((j) => ({ name: j.name, data: j.data, opts: { attempts: 1, ...(j.opts || {}) } })),
  );
  for (const job of added) ids.push(job.id);
}
let failed = 0;
const done = new Promise((resolve) => {
  const worker = new Worker(queueName, async (job) => { throw new Error(job.data.error); }, {
    connection: new IORedis(url, { maxRetriesPerRequest: null }),
    concurrency: 200,
  });
  worker.on("failed", () => { if (++failed >= jobs.length) resolve(worker); });
});
const worker = await done;
await worker.close();
clearTimeout(timer);
await queue.close();
await connection.quit();
// exit only once the ids are out: a pipe takes 64 KB at a time, and process.exit does not wait for the rest
await new Promise((resolve) => process.stdout.write(JSON.stringify(ids) + "\n", resolve));
process.exit(0);
