"""The soak's billing-payment-sync part on its own: the soak mix's four billing job names in its proportions
(invoice.generate 20 : payment.webhook 60 : payment.retry 30 : payment.reconcile 2), through a billing-invoice
slot and the billing-payment-sync slot measured, against the identity and Stripe doubles and PostgreSQL. Every
invoice leaves a PaymentIntent at Stripe, so every reconciliation sweep has more payments to page through as the
run goes on: the part of the soak where a slot's memory could follow the data.

Batches of jobs are added and drained; the slot's RSS is sampled after each. Reported as the soak reports it
(tests/support/soak.py): RSS at the end of warm-up (the first tenth), at half and at the end, growth over the
second half (budget < 5 %) and the slope after warm-up. The default, 3,360 jobs, is the billing share (11.2 %)
of the soak's 30,000.

    .venv/bin/python bench/payment_sync_soak.py [--jobs 3360]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil
from redis.asyncio import Redis

from devstack import databases, engines
from tests.support.doubles import IdentityDouble, StripeDouble
from tests.support.loadstack import add_jobs, backlog, paid_invoice
from tests.support.mix import Mix
from tests.support.processes import PoolProcess, pool_env
from tests.support.soak import WARM_UP, Sample, rss_figures

WEIGHTS = {"invoice.generate": 20, "payment.webhook": 60, "payment.retry": 30, "payment.reconcile": 2}
BATCH = 224
RSS_BUDGET_PCT = 5.0
SLOT = "billing-payment-sync"


async def load(jobs: int, redis_url: str, urls: databases.DatabaseUrls, slot: PoolProcess) -> list[Sample]:
    mix = Mix(seed=23)
    await mix.prepare(urls.admin)
    mix.invoice = await paid_invoice(redis_url, urls.admin, mix)
    names = [name for name, weight in WEIGHTS.items() for _ in range(weight)]
    redis = Redis.from_url(redis_url, decode_responses=True, socket_timeout=30)
    proc = psutil.Process(slot.proc.pid)
    samples: list[Sample] = []
    done = 0
    try:
        while done < jobs:
            batch = [mix.job(mix.rng.choice(names)) for _ in range(min(BATCH, jobs - done))]
            await mix.insert_rows(urls.admin)
            await add_jobs(redis, batch)
            while sum((await backlog(redis)).values()) > 0:
                await asyncio.sleep(0.5)  # the producer's pace: the slots drain the batch meanwhile
            done += len(batch)
            samples.append(Sample(time.time(), done, {SLOT: proc.memory_info().rss}, {}))
            print(f"{done} jobs: {SLOT} RSS {samples[-1].rss[SLOT] / 2**20:.1f} MB", file=sys.stderr)
    finally:
        await redis.aclose()
    return samples


def at(samples: list[Sample], fraction: float) -> float:
    end = samples[-1].done
    return round(next(s.rss[SLOT] for s in samples if s.done >= fraction * end) / 2**20, 1)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=3_360)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="ma-payment-sync-soak-"))
    pg = engines.postgres(home / "pg" / "data", fast=True).start()
    valkey = engines.valkey(home / "valkey", persistent=False).start()
    started: list[object] = [pg, valkey]
    try:
        urls = databases.bootstrap(pg.url)
        identity = IdentityDouble(urls.admin, home / "identity-double.log")
        started.append(identity)
        stripe = StripeDouble(home / "stripe-double.log")
        started.append(stripe)
        env = pool_env(
            valkey.url,
            urls,
            MA_QUEUE_TABLE="pool.queue_table:QUEUES",
            IDENTITY_BASE_URL=identity.url,
            MA_INVOICE_DIR=str(home / "invoices"),
            **stripe.env(),
        )
        started.append(PoolProcess("billing-invoice", env, home / "billing-invoice.log"))
        slot = PoolProcess(SLOT, env, home / f"{SLOT}.log")
        started.append(slot)
        began = time.monotonic()
        samples = asyncio.run(load(args.jobs, valkey.url, urls, slot))
        seconds = round(time.monotonic() - began)
        intents = stripe.stats().get("POST /v1/payment_intents", 0)
        pages = stripe.stats().get("GET /v1/payment_intents", 0)
    finally:
        for thing in reversed(started):
            thing.stop()  # type: ignore[attr-defined]
    figures = rss_figures(samples)["rss"][SLOT] if len(samples) >= 4 else {}
    growth = figures.get("growth_second_half_pct")
    result = {
        "benchmark": "payment_sync_soak",
        "jobs": samples[-1].done if samples else 0,
        "seconds": seconds,
        "payment_intents": intents,
        "list_pages": pages,
        "rss_mb_warm_up_end": at(samples, WARM_UP) if samples else None,
        "rss_mb_half": at(samples, 0.5) if samples else None,
        "rss_mb_end": figures.get("rss_mb_end"),
        "rss_growth_second_half_pct": growth,
        "slope_mb_per_100k_jobs": figures.get("slope_mb_per_100k_jobs"),
        "ok": growth is not None and growth < RSS_BUDGET_PCT,
    }
    print(
        f"{result['jobs']} billing jobs in {seconds} s ({intents} PaymentIntents, {pages} list pages): {SLOT} RSS "
        f"{result['rss_mb_warm_up_end']} MB after warm-up, {result['rss_mb_half']} at half, "
        f"{result['rss_mb_end']} at the end; second half {growth:+.2f} % (budget < {RSS_BUDGET_PCT} %)"
        if growth is not None
        else "too few samples"
    )
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
