"""The reconciliation sweep against a Stripe history: it asks Stripe for its window only and holds one page of
PaymentIntents at a time, so a slot's memory does not follow the number of payments; and the Stripe double pages
PaymentIntents as Stripe does (newest first, `limit` 10 by default, `has_more`, `created` ranges)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import stripe as stripe_sdk
from bullmq import Queue

from tests.support.billing import stripe_client
from tests.support.waits import run_job, settle, wait_for

SYNC = "billing-payment-sync"
OLD = 72 * 3600
"""Seeded histories are three days old: outside the default 48 h sweep every other test's slot runs at start."""


def peak_rss(pid: int) -> int:
    """The process's high-water RSS in bytes (`VmHWM`): what the largest working set it ever had took."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


@pytest.fixture
def sync_slot(start_real_pool, stripe, tmp_path, redis):
    """A payment-sync slot whose start-up sweep has run (so it is not mistaken for the sweep under test)."""

    async def start():
        slot = start_real_pool(SYNC, **stripe.env(), MA_INVOICE_DIR=str(tmp_path / "invoices"))
        sync = Queue(SYNC, {"connection": redis})

        async def startup_sweep_done() -> bool:
            return any(job.name == "payment.reconcile" for job in await sync.getJobs(["completed"]))

        await wait_for(startup_sweep_done, what="the start-up reconciliation sweep")
        return slot

    return start


def test_the_stripe_double_lists_payment_intents_newest_first_in_pages_as_stripe_does(stripe):
    tag = f"in_pg{uuid.uuid4().hex[:6]}_"
    seeded = stripe.seed_intents(12, OLD, tag)
    client = stripe_client(stripe)
    window = {"gte": int(time.time()) - OLD - 60, "lte": int(time.time()) - OLD + 60}

    first = client.v1.payment_intents.list({"created": window})
    assert len(first.data) == 10 and first.has_more  # Stripe's default limit
    ours, params = [], {"created": window, "limit": 5}
    while True:
        page = client.v1.payment_intents.list(params)
        ours += [i.id for i in page.data if i.metadata["invoiceId"].startswith(tag)]
        if not page.has_more:
            break
        params["starting_after"] = page.data[-1].id
    assert ours == seeded[::-1]  # newest first, each once, across pages

    back = client.v1.payment_intents.list({"created": window, "limit": 3, "ending_before": seeded[5]})
    assert [i.id for i in back.data] == [seeded[8], seeded[7], seeded[6]] and back.has_more
    recent = client.v1.payment_intents.list({"created": {"gt": int(time.time()) - 3600}, "limit": 100})
    assert not set(seeded) & {i.id for i in recent.data}
    with pytest.raises(stripe_sdk.InvalidRequestError):
        client.v1.payment_intents.list({"limit": 101})


async def test_the_sweep_asks_stripe_for_its_window_only(redis, sync_slot, stripe):
    await sync_slot()
    # Three pages of history outside the window the sweep is asked for.
    stripe.seed_intents(250, OLD, f"in_old{uuid.uuid4().hex[:6]}_")
    since = int(time.time()) - 3600
    in_window, params = 0, {"limit": 100}
    while True:  # counted by paging through everything, without the `created` filter under test
        page = stripe_client(stripe).v1.payment_intents.list(params)
        in_window += sum(1 for i in page.data if i.created >= since)
        if not page.has_more:
            break
        params["starting_after"] = page.data[-1].id
    stripe.hook("POST", "/__reset")

    sweep = await run_job(redis, SYNC, "payment.reconcile", {"lookbackHours": 1})

    assert sweep.returnvalue is not None, sweep.failedReason
    pages = max(1, -(-in_window // 100))  # the history outside the window is never sent
    assert stripe.stats().get("GET /v1/payment_intents", 0) == pages


async def test_a_sweep_over_2000_payments_holds_one_page_of_them_not_all(redis, sync_slot, stripe):
    slot = await sync_slot()
    stripe.seed_intents(2_000, OLD, f"in_mem{uuid.uuid4().hex[:6]}_")
    before = peak_rss(slot.proc.pid)

    sweep = await run_job(redis, SYNC, "payment.reconcile", {"lookbackHours": 96}, timeout=120)

    assert sweep.returnvalue is not None, sweep.failedReason
    assert sweep.returnvalue["checked"] >= 2_000
    grown = peak_rss(slot.proc.pid) - before
    # Held whole, 2,000 intents as Stripe objects are ~75 MB (~37 KB each as the double returns them); a page
    # of 100 at a time stays within a few MB of what the slot already used.
    assert grown < 25 * 2**20, f"the slot's peak RSS grew {grown / 2**20:.1f} MB over one sweep"


async def test_a_second_sweep_in_a_slot_while_one_runs_returns_at_once(redis, sync_slot, stripe):
    await sync_slot()
    # The running sweep's first page is held back 5 s at Stripe, so the second arrives while it runs.
    stripe.hook(
        "POST", "/__faults", {"status": "slow-after", "delay": 5, "path": "/v1/payment_intents", "count": 1}
    )
    sync = Queue(SYNC, {"connection": redis})
    first = await sync.add("payment.reconcile", {"lookbackHours": 1})
    await wait_for(lambda: stripe.stats().get("fault slow-after", 0) == 1, what="the first sweep at Stripe")

    second = await run_job(redis, SYNC, "payment.reconcile", {"lookbackHours": 1})
    done = await settle(redis, SYNC, first.id)

    assert second.returnvalue == {
        "checked": 0,
        "enqueued": 0,
        "skipped": f"sweep {first.id} is running in this slot",
    }
    assert done.returnvalue is not None and "skipped" not in done.returnvalue, done.failedReason
