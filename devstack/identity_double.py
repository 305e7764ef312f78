"""A small identity-service double: a real HTTP server over the identity database.

Its endpoints grow with the handler issues. Run: python -m devstack.identity_double --port P --database-url URL
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

import asyncpg
from aiohttp import web

log = logging.getLogger("identity-double")
DB = web.AppKey("db", asyncpg.Pool)


async def healthz(request: web.Request) -> web.Response:
    await request.app[DB].fetchval("SELECT 1")
    return web.json_response({"status": "ok"})


async def get_organization(request: web.Request) -> web.Response:
    row = await request.app[DB].fetchrow(
        "SELECT id, name, slug, status FROM organizations WHERE id = $1", request.match_info["org_id"]
    )
    if row is None:
        return web.json_response({"error": "organization_not_found"}, status=404)
    return web.json_response({"id": row["id"], "name": row["name"], "slug": row["slug"], "status": row["status"]})


async def get_tenant(request: web.Request) -> web.Response:
    row = await request.app[DB].fetchrow(
        "SELECT id, organization_id, name, status FROM tenants WHERE id = $1", request.match_info["tenant_id"]
    )
    if row is None:
        return web.json_response({"error": "tenant_not_found"}, status=404)
    return web.json_response({"id": row["id"], "organizationId": row["organization_id"], "name": row["name"],
                              "status": row["status"]})  # fmt: skip


def build_app(pool: asyncpg.Pool) -> web.Application:
    app = web.Application()
    app[DB] = pool
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/organizations/{org_id}", get_organization)
    app.router.add_get("/v1/tenants/{tenant_id}", get_tenant)
    return app


async def serve(port: int, database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=10)
    runner = web.AppRunner(build_app(pool), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    log.info("identity double on http://127.0.0.1:%d", port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args.port, args.database_url))


if __name__ == "__main__":
    main()
