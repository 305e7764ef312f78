// A Node BullMQ FlowProducer flow, as a Node service adds one, and a Node worker that runs its children.
// usage: node flow.mjs REDIS_URL FLOW_JSON WORK_QUEUE FINISH_COUNT TIMEOUT_MS [fixed]
//   FLOW_JSON: FlowProducer.add's tree ({name, queueName, data, opts, children: [...]}), or null to add none;
//   the worker on WORK_QUEUE fails a job whose data.fail is set (UnrecoverableError, no retry: a permanent
//   failure; not once `fixed`, as after a fix is deployed) and completes the others; it stops once
//   FINISH_COUNT jobs finished (completed or failed).
// prints {"parent": {"queue", "id"}, "children": [{"queue", "id", "name"}, ...]} (children in FLOW_JSON order),
// or null when no flow was added
import { FlowProducer, UnrecoverableError, Worker } from "bullmq";
import IORedis from "ioredis";

const [url, flowJson, workQueue, finishCount, timeoutMs, mode] = process.argv.slice(2);
const connection = new IORedis(url, { maxRetriesPerRequest: null });
const timer = setTimeout(() => { console.error("timeout"); process.exit(3); }, Number(timeoutMs));

let tree = null;
if (JSON.parse(flowJson) !== null) {
  const flow = new FlowProducer({ connection });
  tree = await flow.add(JSON.parse(flowJson));
  await flow.close();
}

let finished = 0;
const done = new Promise((resolve) => {
  if (Number(finishCount) === 0) return resolve();
  const worker = new Worker(workQueue, async (job) => {
    if (job.data.fail && mode !== "fixed") throw new UnrecoverableError(job.data.fail);
    return { ranBy: "node", id: job.id };
  }, { connection });
  const count = async () => {
    if (++finished >= Number(finishCount)) { await worker.close(); resolve(); }
  };
  worker.on("completed", count);
  worker.on("failed", count);
});
await done;
clearTimeout(timer);
console.log(JSON.stringify(tree && {
  parent: { queue: tree.job.queueName, id: tree.job.id },
  children: (tree.children || []).map((c) => ({ queue: c.job.queueName, id: c.job.id, name: c.job.name })),
}));
await connection.quit();
