"""Tasks database: organizations and tenants mirrored from identity, entitlements, tasks, notifications.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


SCHEMA = """
    CREATE TABLE organizations (
        id          text PRIMARY KEY,
        name        text NOT NULL,
        status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
        created_at  timestamptz NOT NULL DEFAULT now(),
        updated_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE tenants (
        id               text PRIMARY KEY,
        organization_id  text NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
        name             text NOT NULL,
        created_at       timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX tenants_org ON tenants(organization_id);
    CREATE TABLE entitlements (
        organization_id  text NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
        product_slug     text NOT NULL,
        feature          text NOT NULL,
        quota            bigint,
        created_at       timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (organization_id, product_slug, feature)
    );
    CREATE TABLE tasks (
        id               text PRIMARY KEY,
        organization_id  text NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
        tenant_id        text REFERENCES tenants(id) ON DELETE CASCADE,
        title            text NOT NULL,
        status           text NOT NULL DEFAULT 'open',
        assignee_id      text,
        assigned_by      text,
        assigned_at      timestamptz,
        due_at           timestamptz,
        created_at       timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX tasks_due ON tasks(due_at) WHERE status <> 'done';
    CREATE INDEX tasks_org ON tasks(organization_id);
    CREATE TABLE notifications (
        id               bigserial PRIMARY KEY,
        dedupe_key       text NOT NULL UNIQUE,
        kind             text NOT NULL,
        organization_id  text NOT NULL,
        task_id          text,
        recipient_id     text NOT NULL,
        payload          jsonb NOT NULL DEFAULT '{}',
        created_at       timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX notifications_org ON notifications(organization_id);
"""


def upgrade() -> None:
    for statement in SCHEMA.split(";"):  # asyncpg prepares one statement at a time
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE notifications, tasks, entitlements, tenants, organizations")
