"""The identity-service double: a real HTTP server over the identity database.

What the worker's clients call, with the behaviours that matter to them:
- tokens: `POST /v1/auth/token` (service key) -> short-lived access token + refresh token; `POST /v1/auth/refresh`;
  `POST /v1/admin/sessions/{id}/rotate` (TokenService.rotateSession). A token's organization scope is the
  snapshot taken when its session was issued or rotated: an organization created later answers
  403 `organization_scope_mismatch` until the session is rotated.
- lookups: organizations, tenants, invitations; `POST /v1/tasks/context` (fetchTasksContext).
- admin: session cleanup, impersonation cleanup (with audit events), invitation marked sent; bulk item changes
  `POST /v1/admin/{users|organizations}/{id}/{activate|suspend}` with a required `Idempotency-Key` (a replayed
  key answers the first result and changes nothing; each applied change is one audit event carrying the key);
  `GET /v1/users/{id}`.
- billing: `POST /v1/billing/rollups/replace` (a period's rollups, each upserted by its key; rollups of that
  period missing from the set are removed, so re-running a period replaces, never adds),
  `POST /v1/billing/invoices` (idempotent per subscription and period: the first record wins and is returned),
  `GET /v1/billing/invoices/{id}`, `POST /v1/billing/invoices/{id}/document`,
  `POST /v1/billing/invoices/{id}/payment` (a Stripe event id is applied once: a repeat answers `duplicate`),
  `GET /v1/billing/payment-events/{event_id}`.
- Supabase auth admin: `POST /auth/v1/invite`, `GET /auth/v1/admin/users/{id}` (apikey + bearer service key).
- rate limiting from IDENTITY_RATE_LIMIT_MAX / IDENTITY_RATE_LIMIT_TIME_WINDOW (ms): 429 + Retry-After.
- test hooks: `POST /__faults` (the next N requests, or all for S seconds, answer 429/401/403/500 or hang),
  `POST /__ratelimit`,
  `POST /__latency` (delay answers under a path prefix),
  `GET /__stats`, `POST /__reset`.

Where things are: app.py (the route table, serving, the command line), state.py (what is kept in memory),
gatekeeper.py (the middleware: counters, faults, rate limit, latency in front of every API call), auth.py (the
credential checks every API handler wears, and the token endpoints), lookups.py, admin.py, billing.py,
supabase.py (the APIs), hooks.py (the /__ test hooks).

Run: python -m devstack.identity_double --port P --database-url URL [--service-key K] [--token-ttl S]
"""
