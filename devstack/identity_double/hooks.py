"""Test hooks (paths under /__, never counted, faulted or throttled): inject faults, set the rate limit or a
latency, read the counters, reset all of these."""

from __future__ import annotations

import time

from aiohttp import web

from devstack.identity_double.state import STATE, Fault


async def add_fault(request: web.Request) -> web.Response:
    body = await request.json()
    seconds = float(body.get("seconds", 0))
    fault = Fault(
        body["status"],
        int(body.get("count", 0 if seconds else 1)),
        body.get("path", ""),
        float(body.get("retryAfter", 1)),
        time.monotonic() + seconds if seconds else 0.0,
    )
    request.app[STATE].faults.append(fault)
    return web.json_response({"queued": len(request.app[STATE].faults)})


async def set_rate_limit(request: web.Request) -> web.Response:
    body = await request.json()
    state = request.app[STATE]
    state.rate_max, state.rate_window_ms = int(body.get("max", 0)), int(body.get("windowMs", 60_000))
    state.window_start, state.window_count = time.monotonic(), 0
    return web.json_response({"max": state.rate_max, "windowMs": state.rate_window_ms})


async def set_latency(request: web.Request) -> web.Response:
    body = await request.json()
    state = request.app[STATE]
    if float(body.get("seconds", 0)) > 0:
        state.latency[body.get("path", "")] = float(body["seconds"])
    else:
        state.latency.pop(body.get("path", ""), None)
    return web.json_response(state.latency)


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(dict(request.app[STATE].stats))


async def reset(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.faults.clear()
    state.stats.clear()
    state.latency.clear()
    state.rate_max = 0
    return web.json_response({"reset": True})
