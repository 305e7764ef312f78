"""The billing tests' shared fixtures: the queue names, period helpers, a pool starter wired to the Stripe double,
and fresh subscriptions (tests/test_billing_usage.py, tests/test_billing_invoice.py,
tests/test_billing_payment_sync.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

USAGE, INVOICE, SYNC = "billing-usage", "billing-invoice", "billing-payment-sync"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def today() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def this_month() -> tuple[datetime, datetime]:
    start = today().replace(day=1)
    return start, (start + timedelta(days=32)).replace(day=1)


@pytest.fixture
def billing_pool(start_real_pool, stripe, tmp_path):
    def start(queue: str, **extra: str):
        return start_real_pool(queue, **stripe.env(), MA_INVOICE_DIR=str(tmp_path / "invoices"), **extra)

    return start


@pytest.fixture
async def subscription(identity_db):
    """A fresh subscription of org_globex on the starter plan, for this month, with the given card."""

    async def make(card: str = "pm_card_visa", plan: str = "plan_starter") -> str:
        sub = f"sub_t{uuid.uuid4().hex[:8]}"
        start, end = this_month()
        await identity_db.execute(
            "INSERT INTO subscriptions (id, organization_id, plan_id, current_period_start, current_period_end,"
            " stripe_customer_id, stripe_payment_method) VALUES ($1, 'org_globex', $2, $3, $4, 'cus_test', $5)",
            sub,
            plan,
            start,
            end,
            card,
        )
        return sub

    return make
