"""The Stripe double (devstack/stripe_double.py) keeps localstripe's objects in memory only."""

from __future__ import annotations

import threading

from localstripe.resources import store

from devstack import stripe_pages


def test_adding_an_object_to_the_stripe_double_does_not_pickle_its_whole_store():
    # localstripe's Store pickles everything it holds to /tmp/localstripe.pickle on each item set, a cost that
    # grows with the store; a lock cannot be pickled, so such a write would raise here.
    stripe_pages.install()
    lock = threading.Lock()
    store["bench_lock:1"] = lock
    try:
        assert store["bench_lock:1"] is lock
    finally:
        store.pop("bench_lock:1", None)


def test_the_stripe_double_lists_a_type_from_its_index_through_adds_removals_and_a_flush():
    # localstripe scanned its whole store for every listing (a charge's refunds each time a charge is shown)
    stripe_pages.install()
    from localstripe.resources import StripeObject

    class Thing(StripeObject):
        object = "bench_thing"

    def listed() -> list[str]:
        return [obj.id for obj in Thing._api_list_all(None)._list]

    first, second, third = Thing("t1"), Thing("t2"), Thing("t3")
    store["bench_other:t9"] = object()
    assert listed() == [first.id, second.id, third.id]  # in the order added, and no other type
    del store["bench_thing:t2"]
    assert listed() == [first.id, third.id]
    store.clear()  # the double's `DELETE /_config/data`
    assert listed() == []
