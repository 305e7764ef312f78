"""What the three billing queues share: periods and their alignment, the subscription and its plan (identity DB,
read-only), and pricing with exact decimal arithmetic."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal, TypeVar

from pydantic import AwareDatetime, Field, model_validator
from sqlalchemy import text

from handlers.context import JobContext
from handlers.errors import PermanentError
from handlers.payloads import Id, Payload

Resolution = Literal["hourly", "daily", "monthly"]
Feature = str
FEATURE = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.\-]*$")
MAX_BUCKETS = 10_000
"""Buckets one job may produce per feature: e.g. a year of hourly rollups is 8,760."""


def add_months(moment: datetime, months: int) -> datetime:
    month = moment.month - 1 + months
    year, month = moment.year + month // 12, month % 12 + 1
    return moment.replace(year=year, month=month, day=1) if moment.day == 1 else _clamp(moment, year, month)


def _clamp(moment: datetime, year: int, month: int) -> datetime:
    next_first = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=moment.tzinfo)
    last_day = (next_first - timedelta(days=1)).day
    return moment.replace(year=year, month=month, day=min(moment.day, last_day))


def step(moment: datetime, resolution: Resolution) -> datetime:
    if resolution == "hourly":
        return moment + timedelta(hours=1)
    if resolution == "daily":
        return moment + timedelta(days=1)
    return add_months(moment, 1)


def is_aligned(moment: datetime, resolution: Resolution) -> bool:
    utc = moment.astimezone(UTC)
    if utc.minute or utc.second or utc.microsecond:
        return False
    return resolution == "hourly" or (utc.hour == 0 and (resolution == "daily" or utc.day == 1))


def periods(start: datetime, end: datetime, resolution: Resolution) -> list[tuple[datetime, datetime]]:
    out, at = [], start
    while at < end:
        nxt = min(step(at, resolution), end)
        out.append((at, nxt))
        at = nxt
    return out


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Period(Payload):
    organization_id: Id
    subscription_id: Id
    period_start: AwareDatetime
    period_end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.period_end <= self.period_start:
            raise ValueError("periodEnd must be after periodStart")
        return self


@dataclass(frozen=True)
class Price:
    feature: str
    included: Decimal
    unit_minor: Decimal


@dataclass(frozen=True)
class Subscription:
    id: str
    organization_id: str
    status: str
    plan_id: str
    plan_name: str
    currency: str
    base_minor: int
    period_start: datetime
    period_end: datetime
    payment_method: str | None
    customer: str | None
    prices: tuple[Price, ...]


async def subscription(ctx: JobContext, subscription_id: str, organization_id: str) -> Subscription:
    """The subscription with its plan and per-feature prices, checked against the job's organization."""
    async with ctx.identity_db.connect() as conn:
        row = (
            (
                await conn.execute(
                    text(
                        "SELECT s.id, s.organization_id, s.status, s.plan_id, p.name AS plan_name, p.currency,"
                        " p.base_price_minor, s.current_period_start, s.current_period_end, s.stripe_payment_method,"
                        " s.stripe_customer_id FROM subscriptions s JOIN plans p ON p.id = s.plan_id WHERE s.id = :id"
                    ),
                    {"id": subscription_id},
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            raise PermanentError(f"subscriptionId {subscription_id} does not exist at identity")
        if row["organization_id"] != organization_id:
            raise PermanentError(
                f"subscriptionId {subscription_id} is not in organization {organization_id}; refused"
            )
        prices = (
            await conn.execute(
                text(
                    "SELECT feature, included_quantity, unit_price_minor FROM"
                    " plan_feature_prices WHERE plan_id = :plan ORDER BY feature"
                ),
                {"plan": row["plan_id"]},
            )
        ).all()
    return Subscription(
        row["id"],
        row["organization_id"],
        row["status"],
        row["plan_id"],
        row["plan_name"],
        row["currency"],
        int(row["base_price_minor"]),
        row["current_period_start"],
        row["current_period_end"],
        row["stripe_payment_method"],
        row["stripe_customer_id"],
        tuple(Price(f, Decimal(i), Decimal(u)) for f, i, u in prices),
    )


@dataclass(frozen=True)
class Line:
    feature: str
    quantity: Decimal
    included: Decimal
    overage: Decimal
    unit_minor: Decimal
    amount_minor: int

    def dump(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "quantity": str(self.quantity),
            "included": str(self.included),
            "overage": str(self.overage),
            "unitPriceMinor": str(self.unit_minor),
            "amountMinor": self.amount_minor,
        }


def price(sub: Subscription, usage: dict[str, Decimal]) -> tuple[list[Line], int]:
    """Lines per priced feature (overage above the included quantity at the unit price, rounded half-up to
    whole minor units per line) and the total in minor units, base price included. Exact decimals throughout."""
    lines = []
    for p in sub.prices:
        quantity = usage.get(p.feature, Decimal(0))
        overage = max(Decimal(0), quantity - p.included)
        amount = int((overage * p.unit_minor).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        lines.append(Line(p.feature, quantity, p.included, overage, p.unit_minor, amount))
    return lines, sub.base_minor + sum(line.amount_minor for line in lines)


def money(minor: int, currency: str) -> str:
    """`USD 1,234.56` (two-decimal currencies; the plans here are all such)."""
    sign = "-" if minor < 0 else ""
    units, cents = divmod(abs(minor), 100)
    return f"{currency.upper()} {sign}{units:,}.{cents:02d}"


# -- Stripe failures mapped to our kinds ----------------------------------------------------------------------------
T = TypeVar("T")


class StripeUnavailable(Exception):
    """Stripe answered 5xx/429 or could not be reached (after the client's own retries): retried by the job."""


def stripe_error(error: Exception, what: str) -> Exception:
    import stripe

    if isinstance(error, stripe.APIConnectionError | stripe.RateLimitError):
        return StripeUnavailable(f"Stripe unavailable for {what}: {type(error).__name__}")
    if isinstance(error, stripe.APIError):
        return StripeUnavailable(f"Stripe answered {error.http_status} to {what}")
    if isinstance(error, stripe.StripeError):  # 4xx: will not change on retry
        detail = f"{error.http_status} {error.code or ''} {error.user_message or ''}".strip()
        return PermanentError(f"Stripe refused {what}: {detail}")
    return error


def plain(obj: Any) -> dict[str, Any]:
    """A Stripe object (or None) as a plain dict: StripeObject is no longer a dict subclass."""
    if obj is None:
        return {}
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


async def stripe_call(call: Awaitable[T], what: str) -> T:
    import stripe

    try:
        return await call
    except stripe.StripeError as error:
        raise stripe_error(error, what) from None
