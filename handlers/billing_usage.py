"""Queue `billing-usage`: raw usage events -> rollups per organization, subscription, feature and period.

The aggregation is one set-based GROUP BY in the identity DB (read-only); the rollups go to identity's billing
API as the whole period's set, each with its key (subscription, feature, resolution, bucket) as idempotency key:
re-running a period replaces its rollups, never adds to them. 429 -> deferred (the queue's throttle line,
`Billing usage aggregation throttled`, is logged once per window by the pool).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import Field, model_validator
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, TEXT

from handlers import billing
from handlers.billing import FEATURE, MAX_BUCKETS, Period, Resolution, iso
from handlers.context import Handler, IdempotencyKeys, JobContext
from handlers.payloads import Id

TRUNC = {"hourly": "hour", "daily": "day", "monthly": "month"}

AGGREGATE_SQL = """
    SELECT feature, date_trunc(:unit, occurred_at, 'UTC') AS bucket, sum(quantity) AS quantity, count(*) AS events
    FROM usage_events
    WHERE subscription_id = :subscription AND organization_id = :organization
      AND occurred_at >= :start AND occurred_at < :end{features}
    GROUP BY feature, bucket
"""
"""No ORDER BY: with it the planner sorts every raw row (it estimates about one row per group) instead of hashing.
The feature clause is only there when features are given (a generic prepared plan would test it on every row)."""
BY_FEATURES = text(AGGREGATE_SQL.format(features=" AND feature = ANY(:features)")).bindparams(
    bindparam("features", type_=ARRAY(TEXT))
)
ALL_FEATURES = text(AGGREGATE_SQL.format(features=""))


class UsageAggregate(Period):
    resolution: Resolution
    features: list[Annotated[str, FEATURE]] | None = Field(default=None, min_length=1, max_length=50)

    @model_validator(mode="after")
    def _aligned(self) -> UsageAggregate:
        # Buckets are keyed by their start: a period cut inside a bucket would overwrite it with a partial sum.
        for name, moment in (("periodStart", self.period_start), ("periodEnd", self.period_end)):
            if not billing.is_aligned(moment, self.resolution):
                unit = {"hourly": "an hour", "daily": "a day", "monthly": "a month"}[self.resolution]
                raise ValueError(f"{name} must start {unit} (UTC) for resolution {self.resolution}")
        if len(billing.periods(self.period_start, self.period_end, self.resolution)) > MAX_BUCKETS:
            raise ValueError(f"period holds more than {MAX_BUCKETS} {self.resolution} buckets; split it")
        return self


class UsageBackfill(UsageAggregate):
    backfill_id: Id


async def aggregate(ctx: JobContext, p: UsageAggregate) -> dict[str, Any]:
    """Aggregate and upsert one period of a subscription the caller has checked against the organization; shared
    with invoice generation (which refreshes before pricing)."""
    params = {
        "unit": TRUNC[p.resolution],
        "subscription": p.subscription_id,
        "organization": p.organization_id,
        "start": p.period_start,
        "end": p.period_end,
    }
    query = ALL_FEATURES if p.features is None else BY_FEATURES.bindparams(features=p.features)
    async with ctx.identity_db.connect() as conn:
        rows = sorted((await conn.execute(query, params)).all(), key=lambda r: (r[1], r[0]))
    rollups, totals, events = [], dict.fromkeys(p.features or (), Decimal(0)), 0
    for feature, bucket, quantity, count in rows:
        rollups.append(
            {
                "key": f"{p.subscription_id}:{feature}:{p.resolution}:{iso(bucket)}",
                "feature": feature,
                "bucketStart": iso(bucket),
                "bucketEnd": iso(billing.step(bucket, p.resolution)),
                "quantity": str(quantity),
                "eventCount": count,
            }
        )
        totals[feature] = totals.get(feature, Decimal(0)) + quantity
        events += count
    body = {
        "organizationId": p.organization_id,
        "subscriptionId": p.subscription_id,
        "resolution": p.resolution,
        "periodStart": iso(p.period_start),
        "periodEnd": iso(p.period_end),
        "features": p.features,
        "rollups": rollups,
    }
    answer = await ctx.identity.call(
        "POST",
        "/v1/billing/rollups/replace",
        json=body,
        what=f"rollups of {p.subscription_id} {iso(p.period_start)}",
    )
    return {
        "subscriptionId": p.subscription_id,
        "resolution": p.resolution,
        "periodStart": iso(p.period_start),
        "periodEnd": iso(p.period_end),
        "rollups": len(rollups),
        "removed": answer.get("removed", 0),
        "events": events,
        "quantities": {f: str(q) for f, q in sorted(totals.items())},
    }


async def usage_aggregate(ctx: JobContext, payload: UsageAggregate) -> dict[str, Any]:
    await billing.subscription(ctx, payload.subscription_id, payload.organization_id)
    return await aggregate(ctx, payload)


async def usage_backfill(ctx: JobContext, payload: UsageBackfill) -> dict[str, Any]:
    await billing.subscription(ctx, payload.subscription_id, payload.organization_id)
    return {**await aggregate(ctx, payload), "backfillId": payload.backfill_id}


HANDLERS: dict[str, Handler] = {
    "usage.aggregate": usage_aggregate,
    "billing-usage.backfill": usage_backfill,
}

IDEMPOTENCY_KEYS: IdempotencyKeys = {
    "usage.aggregate": ("subscriptionId", "periodStart", "periodEnd", "resolution"),
}
