"""The Stripe double (devstack/stripe_double.py) keeps localstripe's objects in memory only."""

from __future__ import annotations

import threading

from localstripe.resources import store

from devstack.stripe_double import keep_in_memory


def test_adding_an_object_to_the_stripe_double_does_not_pickle_its_whole_store():
    # localstripe's Store pickles everything it holds to /tmp/localstripe.pickle on each item set, a cost that
    # grows with the store; a lock cannot be pickled, so such a write would raise here.
    keep_in_memory()
    lock = threading.Lock()
    store["bench_lock:1"] = lock
    try:
        assert store["bench_lock:1"] is lock
    finally:
        store.pop("bench_lock:1", None)
