// A steady Node BullMQ producer connected through Redis Sentinel (ioredis' `sentinels` + `name` options), as a
// Node service in front of a failover group would be: adds COUNT test.effect jobs at RATE per second, and says
// which adds Redis acknowledged and which were rejected (none are retried here: an add's promise is its answer).
// usage: node load_sentinel.mjs HOST:PORT[,HOST:PORT...] MASTER QUEUE KEY_PREFIX COUNT RATE_PER_S
//   -> prints {"acked": ["<key>", ...], "rejected": [["<key>", "<error>"], ...]}
import { Queue } from "bullmq";
import IORedis from "ioredis";

const [hostsArg, name, queueName, prefix, count, rate] = process.argv.slice(2);
const sentinels = hostsArg.split(",").map((hp) => {
  const [host, port] = hp.split(":");
  return { host, port: Number(port) };
});
const connection = new IORedis({
  sentinels,
  name,
  maxRetriesPerRequest: null,
  retryStrategy: (n) => Math.min(n * 100, 1000),
  sentinelRetryStrategy: (n) => Math.min(n * 100, 1000),
});
connection.on("error", () => {}); // the failover is expected here; ioredis asks the sentinels again
const queue = new Queue(queueName, { connection });
const acked = [];
const rejected = [];
const every = 1000 / Number(rate);
const started = Date.now();
for (let i = 0; i < Number(count); i++) {
  const key = `${prefix}-${i}`;
  try {
    await queue.add("test.effect", { key }, { attempts: 20, backoff: { type: "fixed", delay: 500 } });
    acked.push(key);
  } catch (error) {
    rejected.push([key, String(error)]);
  }
  const wait = started + (i + 1) * every - Date.now();
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
}
console.log(JSON.stringify({ acked, rejected }));
await queue.close();
await connection.quit();
