"""The middleware in front of every API call: counts it, then answers an injected fault, the rate limit or
the configured latency before the handler (the test hooks in hooks.py set these up)."""

from __future__ import annotations

import asyncio
import math
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from devstack.identity_double.state import STATE, error


@web.middleware
async def gatekeeper(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Faults, rate limit, latency and stats for every API call (not /__ hooks, not /healthz)."""
    state = request.app[STATE]
    path = request.path
    if path.startswith("/__") or path == "/healthz":
        return await handler(request)
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else path
    state.stats[f"{request.method} {route}"] += 1
    now = time.monotonic()
    for fault in state.faults:
        if (fault.remaining > 0 or now < fault.until) and path.startswith(fault.path):
            fault.remaining = max(0, fault.remaining - 1)
            state.stats[f"fault {fault.status}"] += 1
            if fault.status == "hang":
                await asyncio.sleep(30)
            if fault.status == 429:
                return web.json_response(
                    {"error": "rate_limited"},
                    status=429,
                    headers={"Retry-After": str(math.ceil(fault.retry_after))},
                )
            if fault.status == 403:
                return error(403, "organization_scope_mismatch")
            return error(int(fault.status), "injected_fault")
    if state.rate_max > 0:
        now = time.monotonic()
        if now - state.window_start >= state.rate_window_ms / 1000:
            state.window_start, state.window_count = now, 0
        state.window_count += 1
        if state.window_count > state.rate_max:
            state.stats["rate limited"] += 1
            wait = max(0.0, state.window_start + state.rate_window_ms / 1000 - now)
            return web.json_response(
                {"error": "rate_limited"}, status=429, headers={"Retry-After": str(max(1, math.ceil(wait)))}
            )
    # Summed first, then one sleep: iterating state.latency across the sleep broke when a /__latency call
    # changed it meanwhile ("dictionary changed size during iteration": the sleeping requests answered 500).
    delay = sum(seconds for prefix, seconds in state.latency.items() if path.startswith(prefix))
    if delay:
        await asyncio.sleep(delay)
    response = await handler(request)
    state.stats[f"{response.status}"] += 1
    return response
