"""The app assembled (every route in one table), served until SIGTERM or SIGINT, and its command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

import asyncpg
from aiohttp import web

from devstack import identity_double
from devstack.identity_double import admin, auth, billing, gatekeeper, hooks, lookups, supabase
from devstack.identity_double.state import STATE, State

log = logging.getLogger("identity-double")


async def healthz(request: web.Request) -> web.Response:
    """Ready once the identity database answers (the stack and the tests wait on this)."""
    await request.app[STATE].db.fetchval("SELECT 1")
    return web.json_response({"status": "ok"})


def build_app(state: State) -> web.Application:
    app = web.Application(middlewares=[gatekeeper.gatekeeper])
    app[STATE] = state
    r = app.router
    r.add_get("/healthz", healthz)
    # The API: each handler wears its credential check (auth.requires_session, auth.requires_service_key,
    # supabase's apikey check); the gatekeeper counts, faults, throttles and delays every call.
    r.add_post("/v1/auth/token", auth.issue_token)
    r.add_post("/v1/auth/refresh", auth.refresh_token)
    r.add_post("/v1/admin/sessions/{session_id}/rotate", auth.rotate_session)
    r.add_get("/v1/organizations/{org_id}", lookups.get_organization)
    r.add_get("/v1/tenants/{tenant_id}", lookups.get_tenant)
    r.add_post("/v1/tasks/context", lookups.tasks_context)
    r.add_get("/v1/invitations/{invitation_id}", lookups.get_invitation)
    r.add_post("/v1/invitations/{invitation_id}/sent", admin.mark_invitation_sent)
    r.add_post("/v1/admin/sessions/cleanup", admin.cleanup_sessions)
    r.add_post("/v1/admin/impersonation/cleanup", admin.cleanup_impersonation)
    r.add_get("/v1/users/{user_id}", admin.get_user)
    r.add_post("/v1/admin/{target}/{item_id}/{op}", admin.bulk_item)
    r.add_post("/v1/billing/rollups/replace", billing.replace_rollups)
    r.add_post("/v1/billing/invoices", billing.record_invoice)
    r.add_get("/v1/billing/invoices/{invoice_id}", billing.get_invoice)
    r.add_post("/v1/billing/invoices/{invoice_id}/document", billing.invoice_document)
    r.add_post("/v1/billing/invoices/{invoice_id}/payment", billing.invoice_payment)
    r.add_get("/v1/billing/payment-events/{event_id}", billing.get_payment_event)
    r.add_post("/auth/v1/invite", supabase.invite)
    r.add_get("/auth/v1/admin/users/{user_id}", supabase.get_user)
    # Test hooks: no credential, never counted, faulted or delayed.
    r.add_post("/__faults", hooks.add_fault)
    r.add_post("/__ratelimit", hooks.set_rate_limit)
    r.add_post("/__latency", hooks.set_latency)
    r.add_get("/__stats", hooks.get_stats)
    r.add_post("/__reset", hooks.reset)
    return app


async def serve(port: int, database_url: str, service_key: str, token_ttl: float) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=10)
    state = State(
        pool,
        service_key,
        token_ttl,
        rate_max=int(os.environ.get("IDENTITY_RATE_LIMIT_MAX", "0") or 0),
        rate_window_ms=int(os.environ.get("IDENTITY_RATE_LIMIT_TIME_WINDOW", "60000") or 60000),
    )
    # A short shutdown_timeout: a request held by a "hang" fault must not block exit.
    runner = web.AppRunner(build_app(state), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    log.info(
        "identity double on http://127.0.0.1:%d (token ttl %.0fs, rate limit %s/%sms)",
        port,
        token_ttl,
        state.rate_max or "off",
        state.rate_window_ms,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.identity_double",
        description=identity_double.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True, help="the identity DB, with write access")
    parser.add_argument(
        "--service-key", default=os.environ.get("SUPABASE_SERVICE_ROLE_KEY", "dev-service-role-key")
    )
    parser.add_argument("--token-ttl", type=float, default=300.0, help="access token lifetime, seconds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args.port, args.database_url, args.service_key, args.token_ttl))
