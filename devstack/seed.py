"""Deterministic demo data: 3 organizations with tenants, users (one super admin), plans with
per-feature prices, subscriptions, raw usage events, and tasks with assignees and due dates."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import asyncpg

ORGS = [
    ("org_acme", "Acme Corp", "acme"),
    ("org_globex", "Globex", "globex"),
    ("org_initech", "Initech", "initech"),
]
FEATURES = ["ai.tokens", "storage.gb", "api.calls"]
SUPER_ADMIN = "user_root"
PRODUCT = "tasks"


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


async def seed_identity(conn: asyncpg.Connection) -> None:
    rng = random.Random(42)
    now = _now()
    period_start = now.replace(day=1, hour=0, minute=0, second=0)
    async with conn.transaction():
        await conn.executemany("INSERT INTO organizations (id, name, slug) VALUES ($1, $2, $3)", ORGS)
        tenants = [
            (f"{org}_t{i}", org, f"{name} {label}")
            for org, name, _ in ORGS
            for i, label in ((1, "Production"), (2, "Staging"))
        ]
        await conn.executemany("INSERT INTO tenants (id, organization_id, name) VALUES ($1, $2, $3)", tenants)
        users = [(SUPER_ADMIN, "root@ma.example", "Platform Root", True)]
        members = []
        for org, _, slug in ORGS:
            for i in range(1, 4):
                uid = f"user_{slug}_{i}"
                users.append((uid, f"{slug}{i}@{slug}.example", f"{slug.title()} User {i}", False))
                members.append((uid, org, f"{org}_t1", "admin" if i == 1 else "member"))
        await conn.executemany(
            "INSERT INTO users (id, email, full_name, is_super_admin) VALUES ($1, $2, $3, $4)", users
        )
        await conn.executemany(
            "INSERT INTO memberships (user_id, organization_id, tenant_id, role) VALUES ($1, $2, $3, $4)",
            members,
        )
        await conn.execute("INSERT INTO products (slug, name) VALUES ($1, 'Tasks')", PRODUCT)
        await conn.executemany(
            "INSERT INTO product_default_entitlements (product_slug, feature, quota) VALUES ($1, $2, $3)",
            [
                (PRODUCT, "tasks.max", 1000),
                (PRODUCT, "tasks.automations", 20),
                (PRODUCT, "tasks.guests", None),
            ],
        )
        await conn.executemany(
            "INSERT INTO plans (id, name, currency, base_price_minor) VALUES ($1, $2, $3, $4)",
            [("plan_starter", "Starter", "usd", 4900), ("plan_growth", "Growth", "usd", 19900)],
        )
        await conn.executemany(
            "INSERT INTO plan_feature_prices (plan_id, feature, included_quantity, unit_price_minor)"
            " VALUES ($1, $2, $3, $4)",
            [
                ("plan_starter", "ai.tokens", 100_000, "0.002"),
                ("plan_starter", "storage.gb", 10, "25"),
                ("plan_starter", "api.calls", 10_000, "0.05"),
                ("plan_growth", "ai.tokens", 1_000_000, "0.0015"),
                ("plan_growth", "storage.gb", 100, "20"),
                ("plan_growth", "api.calls", 100_000, "0.04"),
            ],
        )
        period_end = (period_start + timedelta(days=32)).replace(day=1)
        # initech's card is declined on charge (the Stripe double's test card), so invoices show both outcomes.
        subs = [
            (
                f"sub_{slug}",
                org,
                "plan_growth" if slug == "acme" else "plan_starter",
                period_start,
                period_end,
                f"cus_{slug}",
                "pm_card_chargeCustomerFail" if slug == "initech" else "pm_card_visa",
            )
            for org, _, slug in ORGS
        ]
        await conn.executemany(
            "INSERT INTO subscriptions (id, organization_id, plan_id, current_period_start, current_period_end,"
            " stripe_customer_id, stripe_payment_method) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            subs,
        )
        events = []
        for sub_id, org, *_ in subs:
            for _ in range(600):
                at = now - timedelta(seconds=rng.randint(0, 60 * 86400))
                feature = rng.choice(FEATURES)
                tokens = (
                    rng.randint(2_000, 20_000) if sub_id == "sub_acme" else rng.randint(100, 5000)
                )  # acme: overage
                qty = {"ai.tokens": tokens, "storage.gb": rng.randint(1, 3)}.get(feature, rng.randint(1, 200))
                events.append((org, sub_id, feature, qty, at))
        await conn.executemany(
            "INSERT INTO usage_events (organization_id, subscription_id, feature, quantity, occurred_at)"
            " VALUES ($1, $2, $3, $4, $5)",
            events,
        )
        await conn.executemany(
            "INSERT INTO invitations (id, organization_id, tenant_id, email, role, invited_by) VALUES ($1, $2, $3, $4, $5, $6)",
            [
                (f"inv_{slug}_1", org, f"{org}_t1", f"new@{slug}.example", "member", f"user_{slug}_1")
                for org, _, slug in ORGS
            ],
        )
        await conn.executemany(
            "INSERT INTO sessions (id, user_id, expires_at) VALUES ($1, $2, $3)",
            [
                (f"sess_{i}", users[1 + i % 9][0], now + timedelta(days=rng.randint(-20, 20)))
                for i in range(40)
            ],
        )
        await conn.executemany(
            "INSERT INTO impersonation_tokens (id, actor_id, user_id, expires_at) VALUES ($1, $2, $3, $4)",
            [
                (f"imp_{i}", SUPER_ADMIN, users[1 + i][0], now + timedelta(hours=rng.randint(-72, 24)))
                for i in range(6)
            ],
        )


async def seed_tasks(conn: asyncpg.Connection) -> None:
    rng = random.Random(7)
    now = _now()
    async with conn.transaction():
        await conn.executemany(
            "INSERT INTO organizations (id, name) VALUES ($1, $2)", [(o, n) for o, n, _ in ORGS]
        )
        await conn.executemany(
            "INSERT INTO tenants (id, organization_id, name) VALUES ($1, $2, $3)",
            [
                (f"{o}_t{i}", o, f"{n} {label}")
                for o, n, _ in ORGS
                for i, label in ((1, "Production"), (2, "Staging"))
            ],
        )
        rows = []
        for org, _, slug in ORGS:
            for i in range(1, 11):
                assignee = f"user_{slug}_{rng.randint(1, 3)}"
                due = (
                    now + timedelta(minutes=rng.randint(-600, 4 * 1440))
                    if i % 3
                    else now + timedelta(minutes=30)
                )
                rows.append(
                    (
                        f"task_{slug}_{i}",
                        org,
                        f"{org}_t1",
                        f"{slug.title()} task {i}",
                        assignee,
                        f"user_{slug}_1",
                        now - timedelta(hours=rng.randint(1, 48)),
                        due,
                    )
                )
        await conn.executemany(
            "INSERT INTO tasks (id, organization_id, tenant_id, title, assignee_id, assigned_by, assigned_at, due_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            rows,
        )
