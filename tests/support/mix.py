"""A realistic mixed load: every job name of the real queue table, weighted as production sees them, each job
valid against the real handlers, the identity double and PostgreSQL (rows it needs are inserted up front).

Used by bench/capacity.py (the pool's capacity), the chaos suite's background load (tests/support/chaos.py) and
the soak (bench/soak.py, tests/test_soak.py). Jobs are dicts `{"queue", "key", "name", "data", "opts"}`, the
plan format of tests/node/load.mjs.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from pool.queue_table import QUEUES

# Relative weights per job name (sums to 1000): notifications and identity events dominate, as in production;
# the scheduled and heavy jobs are rare.
WEIGHTS: dict[str, int] = {
    "task.assigned": 380,
    "task.due-soon": 5,
    "organization.created": 60,
    "organization.updated": 80,
    "organization.suspended": 20,
    "organization.reactivated": 20,
    "organization.deleted": 10,
    "tenant.created": 40,
    "tenant.deleted": 10,
    "invitation.send": 90,
    "session.cleanup": 5,
    "impersonation.cleanup": 5,
    "usage.aggregate": 130,
    "billing-usage.backfill": 20,
    "invoice.generate": 20,
    "payment.webhook": 60,
    "payment.retry": 30,
    "payment.reconcile": 2,
    "bulk.suspend": 5,
    "bulk.activate": 5,
    "bulk.export": 3,
}
QUEUE_OF = {name: queue for queue, spec in QUEUES.items() for name in spec.handlers}
assert set(WEIGHTS) == set(QUEUE_OF), "the mix names every job of the queue table"

ORGS = 20
"""Organizations of the mix (identity and tasks), shared by the identity events of every batch."""


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Mix:
    """Makes mixed jobs for one run; `prepare()` inserts the rows the jobs refer to."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    seed: int = 17
    invoice: tuple[str, str] | None = None
    """(invoice id, payment intent id) of a paid invoice, for payment.webhook and payment.retry."""
    opts: dict[str, Any] = field(default_factory=dict)
    """BullMQ options of every job (e.g. a retention that keeps hashes for the pickup figures)."""

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.names = list(WEIGHTS)
        self.cum: list[int] = []
        total = 0
        for name in self.names:
            total += WEIGHTS[name]
            self.cum.append(total)
        self.n = 0
        self.today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        self.orgs = [f"org_mix_{self.tag}_{i}" for i in range(ORGS)]
        self.pending_orgs: list[str] = []
        self.pending_invitations: list[tuple[str, str]] = []
        self.pending_subs: list[str] = []
        self.users = [f"mu_{self.tag}_{i}" for i in range(20)]

    async def prepare(self, admin_url: str) -> None:
        """The organizations (with a tenant each) and users every batch refers to."""
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.executemany(
                "INSERT INTO organizations (id, name, slug) VALUES ($1, $1, $1) ON CONFLICT DO NOTHING",
                [(o,) for o in self.orgs],
            )
            await conn.executemany(
                "INSERT INTO tenants (id, organization_id, name) VALUES ($1 || '_t1', $1, 'T1')"
                " ON CONFLICT DO NOTHING",
                [(o,) for o in self.orgs],
            )
            await conn.executemany(
                "INSERT INTO users (id, email, full_name) VALUES ($1, $1 || '@mix.example', $1)"
                " ON CONFLICT DO NOTHING",
                [(u,) for u in self.users],
            )
        finally:
            await conn.close()

    def pick(self) -> str:
        r = self.rng.randrange(self.cum[-1])
        for name, edge in zip(self.names, self.cum, strict=True):
            if r < edge:
                return name
        raise AssertionError("unreachable")

    def jobs(self, count: int) -> list[dict[str, Any]]:
        """`count` mixed jobs; call `insert_rows()` before they are added (new orgs, invitations, subscriptions)."""
        return [self.job(self.pick()) for _ in range(count)]

    def job(self, name: str) -> dict[str, Any]:
        self.n += 1
        key = f"{self.tag}_{self.n}"
        data = MAKERS[name](self, key)
        return {"queue": QUEUE_OF[name], "key": key, "name": name, "data": data, "opts": dict(self.opts)}

    async def insert_rows(self, admin_url: str) -> None:
        """The rows of the jobs made since the last call: new organizations, invitations, subscriptions."""
        conn = await asyncpg.connect(admin_url)
        start = self.today.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
        try:
            await conn.executemany(
                "INSERT INTO organizations (id, name, slug) VALUES ($1, $1, $1)",
                [(o,) for o in self.pending_orgs],
            )
            await conn.executemany(
                "INSERT INTO invitations (id, organization_id, tenant_id, email, role, invited_by)"
                " VALUES ($1, 'org_acme', 'org_acme_t1', $2, 'member', 'user_acme_1')",
                self.pending_invitations,
            )
            await conn.executemany(
                "INSERT INTO subscriptions (id, organization_id, plan_id, current_period_start,"
                " current_period_end, stripe_payment_method) VALUES ($1, 'org_globex', 'plan_starter', $2, $3,"
                " 'pm_card_visa')",
                [(s, start, end) for s in self.pending_subs],
            )
        finally:
            await conn.close()
        self.pending_orgs, self.pending_invitations, self.pending_subs = [], [], []

    # -- one maker per job name ---------------------------------------------------------------------------------
    def _org(self) -> str:
        return self.rng.choice(self.orgs)

    def _day(self) -> datetime:
        return self.today - timedelta(days=1 + self.rng.randrange(20))


def _task_assigned(m: Mix, key: str) -> dict[str, Any]:
    return {
        "taskId": f"mt_{key}",
        "organizationId": "org_acme",
        "tenantId": "org_acme_t1",
        "assigneeId": m.rng.choice(["user_acme_2", "user_acme_3"]),
        "assignedBy": "user_acme_1",
        "assignedAt": iso(datetime.now(UTC)),
    }


def _org_created(m: Mix, key: str) -> dict[str, Any]:
    org = f"org_mx_{key}"
    m.pending_orgs.append(org)
    return {"organizationId": org}


def _invitation(m: Mix, key: str) -> dict[str, Any]:
    inv = f"inv_mx_{key}"
    email = f"{key}@mix.example"
    m.pending_invitations.append((inv, email))
    return {
        "invitationId": inv,
        "organizationId": "org_acme",
        "tenantId": "org_acme_t1",
        "email": email,
        "role": "member",
        "invitedBy": "user_acme_1",
    }


def _usage(m: Mix, key: str) -> dict[str, Any]:
    day = m._day()
    return {
        "organizationId": "org_acme",
        "subscriptionId": "sub_acme",
        "periodStart": iso(day),
        "periodEnd": iso(day + timedelta(days=1)),
        "resolution": m.rng.choice(["hourly", "daily"]),
    }


def _invoice(m: Mix, key: str) -> dict[str, Any]:
    sub = f"sub_mx_{key}"
    m.pending_subs.append(sub)
    start = m.today.replace(day=1)
    end = (start + timedelta(days=32)).replace(day=1)
    return {
        "organizationId": "org_globex",
        "subscriptionId": sub,
        "periodStart": iso(start),
        "periodEnd": iso(end),
    }


def _webhook(m: Mix, key: str) -> dict[str, Any]:
    assert m.invoice, "Mix.invoice: run one invoice.generate first (see bench/capacity.py)"
    return {
        "stripeEventId": f"evt_mx_{key}",
        "type": "payment_intent.succeeded",
        "paymentIntentId": m.invoice[1],
    }


def _tenant(m: Mix, key: str) -> dict[str, Any]:
    org = m._org()
    return {"organizationId": org, "tenantId": f"{org}_t1"}


def _bulk(m: Mix, key: str) -> dict[str, Any]:
    return {
        "bulkJobId": f"bulk_mx_{key}",
        "actorId": "user_root",
        "target": "users",
        "ids": m.rng.sample(m.users, 5),
        "reason": "mixed load",
    }


MAKERS: dict[str, Callable[[Mix, str], dict[str, Any]]] = {
    "task.assigned": _task_assigned,
    "task.due-soon": lambda m, k: {"windowMinutes": 60},
    "organization.created": _org_created,
    "organization.updated": lambda m, k: {"organizationId": m._org()},
    "organization.suspended": lambda m, k: {"organizationId": m._org()},
    "organization.reactivated": lambda m, k: {"organizationId": m._org()},
    "organization.deleted": lambda m, k: {"organizationId": m._org()},
    "tenant.created": _tenant,
    "tenant.deleted": _tenant,
    "invitation.send": _invitation,
    "session.cleanup": lambda m, k: {"olderThanDays": 90},
    "impersonation.cleanup": lambda m, k: {},
    "usage.aggregate": _usage,
    "billing-usage.backfill": lambda m, k: {**_usage(m, k), "backfillId": f"bf_mx_{k}"},
    "invoice.generate": _invoice,
    "payment.webhook": _webhook,
    "payment.retry": lambda m, k: {"invoiceId": m.invoice[0] if m.invoice else ""},
    "payment.reconcile": lambda m, k: {"lookbackHours": 1},
    "bulk.suspend": _bulk,
    "bulk.activate": _bulk,
    "bulk.export": lambda m, k: {
        "bulkJobId": f"bulk_mx_{k}",
        "actorId": "user_root",
        "target": "users",
        "filter": {"emailDomain": "mix.example"},
        "format": "csv",
    },
}
assert set(MAKERS) == set(WEIGHTS)


def batches(mix: Mix, total: int, size: int = 2_000) -> Iterator[list[dict[str, Any]]]:
    """`total` jobs in batches (insert each batch's rows with `mix.insert_rows` before adding it)."""
    made = 0
    while made < total:
        n = min(size, total - made)
        made += n
        yield mix.jobs(n)
