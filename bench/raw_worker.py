"""Raw bullmq-python, as its README shows it (default connection), for bench/node_compare.py.

python bench/raw_worker.py REDIS_URL QUEUE CONCURRENCY
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

from bullmq import Worker
from redis.asyncio import Redis


async def main(url: str, queue: str, concurrency: int) -> None:
    recorder = Redis.from_url(url)

    async def process(job, token):
        if job.name == "pickup":
            await recorder.rpush("bench:latency", (time.time() - float(job.data["t"])) * 1000)

    worker = Worker(
        queue, process, {"connection": url, "concurrency": concurrency, "removeOnComplete": {"count": 0}}
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await worker.close(force=True)
    await recorder.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
