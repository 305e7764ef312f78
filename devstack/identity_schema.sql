-- The identity service's schema, as far as the worker reads it. Owned by the identity service;
-- the devstack creates it so a laptop or CI has something real to read.
CREATE TABLE organizations (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    slug        text NOT NULL UNIQUE,
    status      text NOT NULL DEFAULT 'active',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE tenants (
    id               text PRIMARY KEY,
    organization_id  text NOT NULL REFERENCES organizations(id),
    name             text NOT NULL,
    status           text NOT NULL DEFAULT 'active',
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE users (
    id              text PRIMARY KEY,
    email           text NOT NULL UNIQUE,
    full_name       text NOT NULL,
    status          text NOT NULL DEFAULT 'active',
    is_super_admin  boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE memberships (
    user_id          text NOT NULL REFERENCES users(id),
    organization_id  text NOT NULL REFERENCES organizations(id),
    tenant_id        text REFERENCES tenants(id),
    role             text NOT NULL,
    PRIMARY KEY (user_id, organization_id)
);
CREATE TABLE products (
    slug  text PRIMARY KEY,
    name  text NOT NULL
);
CREATE TABLE product_default_entitlements (
    product_slug  text NOT NULL REFERENCES products(slug),
    feature       text NOT NULL,
    quota         bigint,
    PRIMARY KEY (product_slug, feature)
);
CREATE TABLE plans (
    id                text PRIMARY KEY,
    name              text NOT NULL,
    currency          text NOT NULL,
    base_price_minor  bigint NOT NULL
);
CREATE TABLE plan_feature_prices (
    plan_id            text NOT NULL REFERENCES plans(id),
    feature            text NOT NULL,
    included_quantity  numeric NOT NULL DEFAULT 0,
    unit_price_minor   numeric NOT NULL,
    PRIMARY KEY (plan_id, feature)
);
CREATE TABLE subscriptions (
    id                    text PRIMARY KEY,
    organization_id       text NOT NULL REFERENCES organizations(id),
    plan_id               text NOT NULL REFERENCES plans(id),
    status                text NOT NULL DEFAULT 'active',
    current_period_start  timestamptz NOT NULL,
    current_period_end    timestamptz NOT NULL,
    stripe_customer_id    text,
    stripe_payment_method text
);
CREATE TABLE usage_events (
    id               bigserial PRIMARY KEY,
    organization_id  text NOT NULL REFERENCES organizations(id),
    subscription_id  text NOT NULL REFERENCES subscriptions(id),
    feature          text NOT NULL,
    quantity         numeric NOT NULL,
    occurred_at      timestamptz NOT NULL
);
CREATE INDEX usage_events_window ON usage_events(subscription_id, occurred_at);
-- Billing, written by identity's billing API (the worker sends rollups, invoices and payment states).
CREATE TABLE usage_rollups (
    key              text PRIMARY KEY,  -- the rollup's idempotency key: subscription, feature, resolution, bucket
    organization_id  text NOT NULL,
    subscription_id  text NOT NULL REFERENCES subscriptions(id),
    feature          text NOT NULL,
    resolution       text NOT NULL CHECK (resolution IN ('hourly', 'daily', 'monthly')),
    bucket_start     timestamptz NOT NULL,
    bucket_end       timestamptz NOT NULL,
    quantity         numeric NOT NULL,
    event_count      bigint NOT NULL,
    writes           int NOT NULL DEFAULT 1,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_rollups_window ON usage_rollups(subscription_id, resolution, bucket_start);
CREATE SEQUENCE invoice_number_seq START 1001;
CREATE TABLE invoices (
    id                     text PRIMARY KEY,
    number                 text NOT NULL UNIQUE,
    organization_id        text NOT NULL REFERENCES organizations(id),
    subscription_id        text NOT NULL REFERENCES subscriptions(id),
    period_start           timestamptz NOT NULL,
    period_end             timestamptz NOT NULL,
    currency               text NOT NULL,
    subtotal_minor         bigint NOT NULL,
    total_minor            bigint NOT NULL,
    lines                  jsonb NOT NULL,
    document_path          text,
    document_sha256        text,
    payment_status         text NOT NULL DEFAULT 'unpaid',
    payment_intent_id      text,
    amount_refunded_minor  bigint NOT NULL DEFAULT 0,
    failure_code           text,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    UNIQUE (subscription_id, period_start, period_end)
);
CREATE TABLE payment_events (
    stripe_event_id  text PRIMARY KEY,
    invoice_id       text NOT NULL REFERENCES invoices(id),
    type             text NOT NULL,
    payment_status   text NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE invitations (
    id               text PRIMARY KEY,
    organization_id  text NOT NULL REFERENCES organizations(id),
    tenant_id        text REFERENCES tenants(id),
    email            text NOT NULL,
    role             text NOT NULL,
    invited_by       text NOT NULL REFERENCES users(id),
    status           text NOT NULL DEFAULT 'pending',
    sent_at          timestamptz
);
CREATE TABLE sessions (
    id          text PRIMARY KEY,
    user_id     text NOT NULL REFERENCES users(id),
    expires_at  timestamptz NOT NULL
);
CREATE TABLE impersonation_tokens (
    id          text PRIMARY KEY,
    actor_id    text NOT NULL REFERENCES users(id),
    user_id     text NOT NULL REFERENCES users(id),
    expires_at  timestamptz NOT NULL,
    retired_at  timestamptz
);
CREATE TABLE audit_events (
    id          bigserial PRIMARY KEY,
    action      text NOT NULL,
    actor_id    text,
    target_id   text,
    details     jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX audit_events_idempotency_key ON audit_events ((details->>'idempotencyKey'));
-- Supabase auth users (the double serves the auth admin API over this table).
CREATE TABLE auth_users (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email        text NOT NULL UNIQUE,
    invited_at   timestamptz NOT NULL DEFAULT now(),
    invite_count int NOT NULL DEFAULT 1,
    metadata     jsonb NOT NULL DEFAULT '{}'
);
