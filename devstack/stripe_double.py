"""The Stripe double: localstripe (a stateful fake of the Stripe API) with fault injection and counters.

localstripe keeps its objects in memory (here never on disk: several stacks may run side by side) and does not
honour idempotency keys, so the worker must not rely on Stripe-side dedupe. In front of it:
- `POST /__faults {"status": 500, "seconds": 30, "path": "/v1/"}` answers that status for a while (or `count`
  requests); `{"status": "slow-after", "delay": 8, "path": "/v1/payment_intents"}` lets the next matching request
  take effect in Stripe and then holds its answer back that long (a worker killed meanwhile never learns the id).
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


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(dict(CONTROL.stats))


async def reset(request: web.Request) -> web.Response:
    CONTROL.faults.clear()
    CONTROL.stats.clear()
    return web.json_response({"reset": True})


def keep_in_memory() -> None:
    """localstripe persists its store twice: a middleware saves it after each request (dropped in `build_app`),
    and `Store.__setitem__` pickles the whole store to the shared /tmp/localstripe.pickle on every object it
    adds. That write grows with the store (creating a PaymentIntent took ~12 ms with none stored and ~105 ms
    with 500, bench/billing_day.py) and every double on the machine wrote the same file. Turned off for this
    store only: `__setitem__` calls `self.dump_to_disk()`, and an instance attribute wins over the method."""
    from localstripe.resources import store

    store.dump_to_disk = lambda: None


def indexed_lists() -> None:
    """localstripe lists the objects of a type by scanning its whole store, and it lists a charge's refunds each
    time it shows a charge: every PaymentIntent shown cost a scan of everything stored (~25 ms a request with
    2,000 PaymentIntents held, bench/billing_day.py). Here the store also keeps its keys by type, in the order they
    were added (the scan's order), and a listing reads only its type's. Call again after filling the store around
    its methods (`dict.update`): it re-indexes."""
    from localstripe import resources
    from localstripe.errors import UserError

    store = resources.store

    def kind(key: str) -> str:
        return key.split(":", 1)[0]

    if not hasattr(store, "by_type"):

        class IndexedStore(type(store)):  # type: ignore[misc]
            by_type: dict[str, dict[str, Any]]

            def __setitem__(self, key: str, value: Any) -> None:
                super().__setitem__(key, value)
                self.by_type.setdefault(kind(key), {})[key] = value

            def __delitem__(self, key: str) -> None:
                super().__delitem__(key)
                self.by_type.get(kind(key), {}).pop(key, None)

            def clear(self) -> None:
                super().clear()
                self.by_type.clear()

        def list_all(cls: Any, url: Any, limit: Any = None, starting_after: Any = None, **kwargs: Any) -> Any:
            if kwargs:
                raise UserError(400, "Unexpected " + ", ".join(kwargs.keys()))
            page = resources.List(url, limit=limit, starting_after=starting_after)
            page._list = list(store.by_type.get(cls.object, {}).values())
            return page

        store.__class__ = IndexedStore
        resources.StripeObject._api_list_all = classmethod(list_all)
    store.by_type = {}
    for key, value in store.items():
        store.by_type.setdefault(kind(key), {})[key] = value


def newest_first() -> None:
    """Stripe lists PaymentIntents newest first; localstripe lists them in the order it made them. A declined
    charge is found again by listing (handlers/billing_invoice.py `_find_intent`): on Stripe that is the first
    page, on localstripe's order every page of the account, each intent exported with its charge (a billing day
    of 1,000 invoices with 10 declines cost the double as much CPU as the pool, bench/billing_day.py)."""
    from localstripe.resources import PaymentIntent

    if getattr(PaymentIntent._api_list_all, "newest_first", False):
        return
    listed = PaymentIntent._api_list_all.__func__

    def list_all(cls: Any, url: Any, limit: Any = None, starting_after: Any = None, **kwargs: Any) -> Any:
        page = listed(cls, url, limit=limit, starting_after=starting_after, **kwargs)
        page._list.reverse()
        return page

    list_all.newest_first = True  # type: ignore[attr-defined]
    PaymentIntent._api_list_all = classmethod(list_all)


def build_app() -> web.Application:
    from localstripe import server  # imports register localstripe's routes on its module-level app

    app = server.app
    # Never persist to disk (localstripe's default pickles every change to one shared file).
    app.middlewares[:] = [m for m in app.middlewares if m.__name__ != "save_store_middleware"]
    keep_in_memory()
    indexed_lists()
    newest_first()  # after indexed_lists: it wraps the listing that one installs
    app.middlewares.insert(0, faults)
    return app


HOOKS = {("POST", "/__faults"): add_fault, ("GET", "/__stats"): get_stats, ("POST", "/__reset"): reset}


async def serve(port: int, state_file: Path | None = None) -> None:
    from localstripe.resources import store

    if state_file is not None and state_file.exists():
        # dict.update, not Store.update: localstripe's Store writes its shared /tmp file on every item set.
        dict.update(store, pickle.loads(state_file.read_bytes()))
        indexed_lists()
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
