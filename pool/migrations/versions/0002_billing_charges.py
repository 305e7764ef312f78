"""Tasks database: the worker's own record of Stripe charges, checked before any PaymentIntent is created.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


SCHEMA = """
    CREATE TABLE billing_charges (
        invoice_id         text NOT NULL,
        attempt            int NOT NULL,
        idempotency_key    text NOT NULL UNIQUE,
        state              text NOT NULL CHECK (state IN ('creating', 'created', 'declined')),
        payment_intent_id  text UNIQUE,
        amount_minor       bigint NOT NULL,
        currency           text NOT NULL,
        failure_code       text,
        created_at         timestamptz NOT NULL DEFAULT now(),
        updated_at         timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (invoice_id, attempt)
    )
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("DROP TABLE billing_charges")
