"""The Stripe double: localstripe (a stateful fake of the Stripe API) with fault injection and counters.

localstripe keeps its objects in memory (here never on disk: several stacks may run side by side) and does not
honour idempotency keys, so the worker must not rely on Stripe-side dedupe. In front of it:
- `POST /__faults {"status": 500, "seconds": 30, "path": "/v1/"}` answers that status for a while (or `count`
  requests); `{"status": "slow-after", "delay": 8, "path": "/v1/payment_intents"}` lets the next matching request
  take effect in Stripe and then holds its answer back that long (a worker killed meanwhile never learns the id).
- Lists cost what they hold (localstripe scanned every object it held for each, and rewrote its shared
  `/tmp/localstripe.pickle` on every object stored: neither here), and `GET /v1/payment_intents` pages as Stripe
  does (newest first, `limit` default 10, `has_more`, `created` ranges): devstack/stripe_pages.py.
- Where localstripe answers otherwise than Stripe (a PaymentIntent's `latest_charge` expanded unasked, a card
  error without its intent), it answers as Stripe: devstack/stripe_fidelity.py.
- `POST /__payment_intents {"count": 2000, "ageSeconds": 7200, "invoicePrefix": "in_x"}` creates that many
  confirmed PaymentIntents as if created that long ago (a Stripe history for a test, without a request each).
- `GET /__stats` counts requests per method and path (e.g. `POST /v1/payment_intents`), `POST /__reset` clears
  faults and counters (`DELETE /_config/data` still clears localstripe's objects).

With `--state-file F` its objects outlive a restart (stopped with SIGTERM, they are written to F; started, read
back): the chaos suite stops Stripe for minutes and starts it again with its customers and charges.

Run: python -m devstack.stripe_double --port P [--state-file F]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import pickle
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

log = logging.getLogger("stripe-double")


@dataclass
class Fault:
    status: int | str
    path: str
    until: float = 0.0
    remaining: int = 0
    delay: float = 0.0

    def active(self, now: float) -> bool:
        return self.remaining > 0 or now < self.until


@dataclass
class Control:
    faults: list[Fault] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)


CONTROL = Control()


@web.middleware
async def faults(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path.startswith("/__"):  # the test hooks, outside localstripe's auth
        hook = HOOKS.get((request.method, request.path))
        return await hook(request) if hook else web.json_response({"error": "no such hook"}, status=404)
    now = time.monotonic()
    CONTROL.stats[f"{request.method} {_route(request.path)}"] += 1
    for fault in CONTROL.faults:
        if not request.path.startswith(fault.path) or not fault.active(now):
            continue
        fault.remaining = max(0, fault.remaining - 1)
        CONTROL.stats[f"fault {fault.status}"] += 1
        if fault.status == "slow-after":
            response = await handler(request)  # the request takes effect...
            await asyncio.sleep(fault.delay)  # ...but its answer is held back
            return response
        return web.json_response(
            {"error": {"type": "api_error", "message": "injected fault"}}, status=int(fault.status)
        )
    return await handler(request)


def _route(path: str) -> str:
    """`/v1/payment_intents/pi_123/confirm` -> `/v1/payment_intents/{id}/confirm` (bounded counter names)."""
    parts = path.split("/")
    return "/".join("{id}" if i == 3 and part else part for i, part in enumerate(parts))


async def add_fault(request: web.Request) -> web.Response:
    body = await request.json()
    seconds = float(body.get("seconds", 0))
    fault = Fault(
        body["status"],
        body.get("path", "/v1/"),
        time.monotonic() + seconds if seconds else 0.0,
        int(body.get("count", 0 if seconds else 1)),
        float(body.get("delay", 0)),
    )
    CONTROL.faults.append(fault)
    return web.json_response({"faults": len(CONTROL.faults)})


async def seed_intents(request: web.Request) -> web.Response:
    from devstack import stripe_pages

    body = await request.json()
    ids = stripe_pages.seed(int(body["count"]), int(body.get("ageSeconds", 0)), str(body["invoicePrefix"]))
    return web.json_response({"ids": ids})


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(dict(CONTROL.stats))


async def reset(request: web.Request) -> web.Response:
    CONTROL.faults.clear()
    CONTROL.stats.clear()
    return web.json_response({"reset": True})


def build_app() -> web.Application:
    from localstripe import server  # imports register localstripe's routes on its module-level app

    from devstack import stripe_fidelity, stripe_pages

    # localstripe's store pickled all of itself to one shared /tmp file on every item set, and built every list
    # from a scan of all it holds: each object stored or exported cost work in every object before it.
    stripe_pages.install()  # indexed by kind, nothing on disk; PaymentIntent lists paged as Stripe pages them
    stripe_fidelity.install()  # latest_charge an id unless expanded; a card error carries its intent
    app = server.app
    # Never persist to disk (localstripe's default pickles every change to one shared file).
    app.middlewares[:] = [m for m in app.middlewares if m.__name__ != "save_store_middleware"]
    app.middlewares.insert(0, faults)
    return app


HOOKS = {
    ("POST", "/__faults"): add_fault,
    ("GET", "/__stats"): get_stats,
    ("POST", "/__reset"): reset,
    ("POST", "/__payment_intents"): seed_intents,
}


async def serve(port: int, state_file: Path | None = None) -> None:
    from localstripe.resources import store

    if state_file is not None and state_file.exists():
        # dict.update, not Store.update: localstripe's Store writes its shared /tmp file on every item set.
        dict.update(
            store, pickle.loads(state_file.read_bytes())
        )  # indexed in build_app (stripe_pages.install)
    runner = web.AppRunner(build_app(), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    log.info("stripe double (localstripe) on http://127.0.0.1:%d", port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    if state_file is not None:
        state_file.write_bytes(pickle.dumps(dict(store), protocol=pickle.HIGHEST_PROTOCOL))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-file", type=Path, help="keep the objects across a restart (written at stop)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args.port, args.state_file))


if __name__ == "__main__":
    main()
