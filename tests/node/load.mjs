// A steady Node BullMQ producer for the chaos suite: adds the jobs of a plan at a fixed rate, as the platform's
// Node services would, riding out Redis outages (ioredis queues commands while reconnecting).
// usage: node load.mjs REDIS_URL PLAN.json RATE_PER_S  -> prints {"<queue>": {"<key>": "<job id>"}} as JSON
// SIGTERM stops it early (a background load as long as its scenario): it prints the ids of what it added.
import { readFileSync } from "node:fs";
import { Queue } from "bullmq";
import IORedis from "ioredis";

const [url, planPath, rate] = process.argv.slice(2);
const plan = JSON.parse(readFileSync(planPath, "utf8"));
const connection = new IORedis(url, { maxRetriesPerRequest: null, retryStrategy: (n) => Math.min(n * 200, 1000) });
connection.on("error", () => {}); // outages are expected here; ioredis reconnects
const queues = {};
const ids = {};
const every = 1000 / Number(rate);
const started = Date.now();
let stopped = false;
process.on("SIGTERM", () => {
  stopped = true;
});
for (let i = 0; i < plan.length && !stopped; i++) {
  const job = plan[i];
  queues[job.queue] ??= new Queue(job.queue, { connection });
  const added = await queues[job.queue].add(job.name, job.data, job.opts || {});
  (ids[job.queue] ??= {})[job.key] = added.id;
  const wait = started + (i + 1) * every - Date.now();
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
}
console.log(JSON.stringify(ids));
await Promise.all(Object.values(queues).map((q) => q.close()));
await connection.quit();
