"""`ma-worker billing backfill` and `ma-worker billing load-test` (the runbook's Billing Tooling).

backfill: one `billing-usage.backfill` job per period of the window, each with a deterministic job id, so running
the same command twice enqueues nothing new (it says what it added and what was already there). With
`--stagger DURATION` the new jobs are delayed jobs spread over the duration (`pool/stagger.py`). Completed jobs
are kept a day (queue retention); a backfill run again after that re-aggregates, which replaces the same rollups.

load-test: enqueue usage rollups (and invoices) for the last days of one subscription, then watch the billing
queues drain and report processed, failed, throttled, elapsed and jobs/s.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bullmq import Queue
from redis.asyncio import Redis

from handlers import billing
from pool import stagger as stagger_mod
from pool.contracts import bull_key, stats_key
from pool.enqueue import CliError
from pool.queue_table import QueueSpec

USAGE, INVOICE = "billing-usage", "billing-invoice"
BATCH = 500


def parse_day(flag: str, value: str) -> datetime:
    """`2024-08-01` (midnight UTC) or a full ISO-8601 timestamp with a zone."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"{flag} {value} is not a date (YYYY-MM-DD)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_features(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    features = sorted({f.strip() for v in values for f in v.split(",") if f.strip()})
    for feature in features:
        if not feature.replace(".", "").replace("_", "").replace("-", "").isalnum():
            raise CliError(f"--features {feature!r} is not a feature name (letters, digits, . _ -)")
    return features or None


async def check_subscription(database_url: str, org: str, sub: str) -> None:
    from sqlalchemy import text

    from pool.runtime import make_engine

    engine = make_engine(database_url, read_only=True)
    try:
        async with engine.connect() as conn:
            found = (
                await conn.execute(
                    text("SELECT organization_id FROM subscriptions WHERE id = :s"), {"s": sub}
                )
            ).first()
            if found is None:
                raise CliError(f"subscription {sub} does not exist in the identity database")
            if found[0] != org:
                raise CliError(f"subscription {sub} belongs to organization {found[0]}, not {org}")
    except OSError as error:
        raise CliError(f"identity database unreachable: {error}") from None
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class Plan:
    jobs: list[tuple[str, dict[str, Any]]]  # (job id, data)
    existing: list[str]

    @property
    def new(self) -> list[tuple[str, dict[str, Any]]]:
        gone = set(self.existing)
        return [(job_id, data) for job_id, data in self.jobs if job_id not in gone]


def backfill_jobs(
    org: str, sub: str, start: datetime, end: datetime, resolution: str, features: list[str] | None
) -> list[tuple[str, dict[str, Any]]]:
    if end <= start:
        raise CliError(f"--end {end.date()} is not after --start {start.date()}")
    for flag, moment in (("--start", start), ("--end", end)):
        if not billing.is_aligned(moment, resolution):  # type: ignore[arg-type]
            unit = {"hourly": "a whole hour", "daily": "a day (00:00 UTC)", "monthly": "the first of a month"}
            raise CliError(f"{flag} must be {unit[resolution]} for --resolution {resolution}")
    tag = "+".join(features) if features else "all"
    backfill_id = f"bf-{sub}-{resolution}-{start:%Y%m%dT%H}-{end:%Y%m%dT%H}-{tag}"
    jobs = []
    for lo, hi in billing.periods(start, end, resolution):  # type: ignore[arg-type]
        data: dict[str, Any] = {
            "organizationId": org,
            "subscriptionId": sub,
            "periodStart": billing.iso(lo),
            "periodEnd": billing.iso(hi),
            "resolution": resolution,
            "backfillId": backfill_id,
        }
        if features:
            data["features"] = features
        jobs.append((f"backfill-{sub}-{resolution}-{lo:%Y%m%dT%H}-{tag}", data))
    return jobs


async def plan_of(redis: Redis, queue: str, jobs: list[tuple[str, dict[str, Any]]]) -> Plan:
    existing = []
    for at in range(0, len(jobs), BATCH):
        chunk = jobs[at : at + BATCH]
        async with redis.pipeline(transaction=False) as pipe:
            for job_id, _ in chunk:
                pipe.exists(bull_key(queue, job_id))
            found = await pipe.execute()
        existing += [job_id for (job_id, _), there in zip(chunk, found, strict=True) if there]
    return Plan(jobs, existing)


def _progress(total: int) -> Any:
    """A progress bar on a terminal for long ranges; nothing otherwise."""
    if total < 50 or not sys.stderr.isatty():
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress("enqueueing", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True)


async def add_all(
    redis: Redis,
    spec: QueueSpec,
    name: str,
    jobs: list[tuple[str, dict[str, Any]]],
    delays: list[int] | None = None,
) -> None:
    """Add `jobs` under their ids; `delays` (ms, one per job): add them as delayed jobs."""
    queue = Queue(spec.name, {"connection": redis})
    waits = delays or [0] * len(jobs)
    bar = _progress(len(jobs))
    task = bar.add_task("enqueue", total=len(jobs)) if bar else None
    if bar:
        bar.start()
    try:
        for at in range(0, len(jobs), BATCH):
            chunk = jobs[at : at + BATCH]
            await queue.addBulk(
                [
                    {
                        "name": name,
                        "data": data,
                        "opts": {**spec.job_options(), "jobId": job_id} | ({"delay": wait} if wait else {}),
                    }
                    for (job_id, data), wait in zip(chunk, waits[at : at + BATCH], strict=True)
                ]
            )
            if bar:
                bar.update(task, advance=len(chunk))
    finally:
        if bar:
            bar.stop()


async def backfill(
    redis: Redis,
    spec: QueueSpec,
    database_url: str,
    *,
    org: str,
    sub: str,
    start: str,
    end: str,
    resolution: str,
    features: Sequence[str] | None,
    dry_run: bool,
    stagger: str | None = None,
) -> str:
    over_s = stagger_mod.parse_duration(stagger) if stagger else None
    lo, hi = parse_day("--start", start), parse_day("--end", end)
    chosen = parse_features(features)
    jobs = backfill_jobs(org, sub, lo, hi, resolution, chosen)
    await check_subscription(database_url, org, sub)
    plan = await plan_of(redis, spec.name, jobs)
    what = (
        f"backfill {sub} ({org}) {resolution} {billing.iso(lo)} -> {billing.iso(hi)}"
        f" features {','.join(chosen) if chosen else 'all'}"
    )
    ids = [job_id for job_id, _ in plan.new]
    sample = f"\n  first {ids[0]}\n  last  {ids[-1]}" if ids else ""
    delays = stagger_mod.delays_ms(len(ids), over_s) if over_s else None
    if delays is not None and ids:
        sample = "\n" + stagger_mod.describe(ids, delays, over_s or 0)
    how = " as delayed jobs" if delays and ids else ""
    if dry_run:
        return (
            f"{what}: would enqueue {len(ids)} job(s){how}, {len(plan.existing)} already there (dry run)"
            f"{sample}"
        )
    await add_all(redis, spec, "billing-usage.backfill", plan.new, delays)
    return f"{what}: enqueued {len(ids)} job(s){how}, {len(plan.existing)} already there{sample}"


# -- load test --------------------------------------------------------------------------------------------------------
def load_jobs(
    org: str, sub: str, days: int, usage_jobs: int, invoices: bool, run: str
) -> dict[str, list[tuple[str, str, dict[str, str]]]]:
    if days < 1 or usage_jobs < 0:
        raise CliError("--days must be >= 1 and --usage-jobs >= 0")
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    out: dict[str, list[tuple[str, str, dict[str, str]]]] = {USAGE: [], INVOICE: []}
    for i in range(usage_jobs):
        day = today - timedelta(days=1 + i % days)
        out[USAGE].append(
            (
                f"loadtest-{run}-usage-{i}",
                "usage.aggregate",
                {
                    "organizationId": org,
                    "subscriptionId": sub,
                    "periodStart": billing.iso(day),
                    "periodEnd": billing.iso(day + timedelta(days=1)),
                    "resolution": "hourly",
                },
            )
        )
    if invoices:
        for d in range(days):
            day = today - timedelta(days=1 + d)
            out[INVOICE].append(
                (
                    f"loadtest-{run}-invoice-{d}",
                    "invoice.generate",
                    {
                        "organizationId": org,
                        "subscriptionId": sub,
                        "periodStart": billing.iso(day),
                        "periodEnd": billing.iso(day + timedelta(days=1)),
                    },
                )
            )
    return out


async def _counter(redis: Redis, queue: str, name: str) -> int:
    return int(await redis.hget(stats_key(queue), name) or 0)


async def load_test(
    redis: Redis,
    table: dict[str, QueueSpec],
    database_url: str,
    *,
    org: str,
    sub: str,
    days: int,
    usage_jobs: int,
    invoices: bool,
    timeout: float,
) -> tuple[str, bool]:
    await check_subscription(database_url, org, sub)
    run = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    plan = load_jobs(org, sub, days, usage_jobs, invoices, run)
    before = {q: await _counter(redis, q, "throttled") for q in plan}
    started = time.monotonic()
    for queue, jobs in plan.items():
        spec = table[queue]
        q = Queue(queue, {"connection": redis})
        for at in range(0, len(jobs), BATCH):
            await q.addBulk(
                [
                    {"name": name, "data": data, "opts": {**spec.job_options(), "jobId": job_id}}
                    for job_id, name, data in jobs[at : at + BATCH]
                ]
            )
    total = sum(len(j) for j in plan.values())
    print(
        f"load test {run}: enqueued {len(plan[USAGE])} usage and {len(plan[INVOICE])} invoice job(s); "
        f"waiting up to {timeout:.0f}s for them to drain",
        file=sys.stderr,
    )
    done: dict[str, dict[str, int]] = {}
    while True:
        done = {
            queue: await _states(redis, queue, [job_id for job_id, _, _ in jobs])
            for queue, jobs in plan.items()
        }
        finished = sum(s["completed"] + s["failed"] for s in done.values())
        if finished >= total or time.monotonic() - started > timeout:
            break
        await asyncio.sleep(0.5)
    elapsed = time.monotonic() - started
    lines = [
        f"load test {run} on {sub} ({org}): {days} day(s), {usage_jobs} usage job(s), invoices {invoices}",
        f"{'queue':<16} {'jobs':>5} {'completed':>9} {'failed':>6} {'throttled':>9} {'pending':>7}",
    ]
    for queue, states in done.items():
        throttled = await _counter(redis, queue, "throttled") - before[queue]
        pending = len(plan[queue]) - states["completed"] - states["failed"]
        lines.append(
            f"{queue:<16} {len(plan[queue]):>5} {states['completed']:>9} {states['failed']:>6} "
            f"{throttled:>9} {pending:>7}"
        )
    finished = sum(s["completed"] + s["failed"] for s in done.values())
    lines.append(
        f"elapsed {elapsed:.1f}s, {finished / elapsed if elapsed else 0:.1f} jobs/s"
        + ("" if finished >= total else f"; {total - finished} job(s) not finished (timeout)")
    )
    ok = finished >= total and all(s["failed"] == 0 for s in done.values())
    return "\n".join(lines), ok


async def _states(redis: Redis, queue: str, ids: list[str]) -> dict[str, int]:
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(bull_key(queue, job_id), "finishedOn")
            pipe.zscore(bull_key(queue, "failed"), job_id)
        rows = await pipe.execute()
    pairs = list(zip(rows[::2], rows[1::2], strict=True))
    failed = sum(1 for finished, in_failed in pairs if finished and in_failed is not None)
    return {"completed": sum(1 for finished, _ in pairs if finished) - failed, "failed": failed}
