"""Lists in the Stripe double at the cost of what they hold, and PaymentIntents paged as Stripe pages them.

localstripe builds every list from a scan of every object it holds, of every kind, and it lists more often than
it seems: exporting a charge lists its refunds, so creating, confirming or retrieving a PaymentIntent (its
`latest_charge`) scanned the whole store a few times, and a run slowed as its payments accumulated. Here the store
keeps its keys by kind as they are stored, and a list reads only its own kind.

Stripe's `GET /v1/payment_intents`: newest first, `limit` 1-100 (default 10), `starting_after` / `ending_before`
an id of the list, `created` an exact time or a range (`created[gte]=...`), `customer`, and `has_more`.
localstripe's: oldest first, and no `created` or `customer` filter (a 400), so a sweep over a recent window had
to page through the double's whole history. Here a page costs its position plus its limit (a `created` lower
bound ends the walk at the first older intent).
"""

from __future__ import annotations

from typing import Any

from localstripe.errors import UserError
from localstripe.resources import List, PaymentIntent, Store, StripeObject, store

KINDS: dict[str, dict[str, None]] = {}
"""Object kind (`payment_intent`) -> its store keys (`payment_intent:pi_...`) in the order they were stored (a
dict: ordered, and `in` is O(1)); PaymentIntents in `created` order."""
INTENTS = "payment_intent"

RANGE_OPS = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


def _kind(key: str) -> str:
    return key.split(":", 1)[0]


def _stored(self: Store, key: str, value: Any) -> None:
    dict.__setitem__(self, key, value)  # and never localstripe's dump of the whole store to disk
    KINDS.setdefault(_kind(key), {})[key] = None


def _removed(self: Store, key: str) -> None:
    dict.__delitem__(self, key)
    KINDS.get(_kind(key), {}).pop(key, None)


def _list_all(cls: Any, url: str, limit: Any = None, starting_after: Any = None, **unknown: Any) -> Any:
    """localstripe's `StripeObject._api_list_all` (every kind's list starts here), from the index."""
    if unknown:
        raise UserError(400, "Unexpected " + ", ".join(unknown))
    page = List(url, limit=limit, starting_after=starting_after)
    page._list = [obj for key in KINDS.get(cls.object, {}) if (obj := store.get(key)) is not None]
    return page


class Page:
    """What the double answers a PaymentIntent list with: Stripe's list object (no `total_count`, as Stripe)."""

    def __init__(self, url: str, items: list[Any], has_more: bool) -> None:
        self.url, self.items, self.has_more = url, items, has_more

    def _export(self, expand: list[str] | None = None) -> dict[str, Any]:
        inner = [path.removeprefix("data.") for path in expand or [] if path.startswith("data.")]
        return {
            "object": "list",
            "url": self.url,
            "has_more": self.has_more,
            "data": [item._export(expand=inner) for item in self.items],
        }


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UserError(400, f"Invalid integer: {name}") from None


def _created_filter(created: Any) -> list[tuple[str, int]]:
    if created is None:
        return []
    if isinstance(created, dict):
        unknown = set(created) - set(RANGE_OPS)
        if unknown:
            raise UserError(400, f"Received unknown parameter: created[{sorted(unknown)[0]}]")
        return [(op, _int(value, f"created[{op}]")) for op, value in created.items()]
    return [("eq", _int(created, "created"))]


def _matches(intent: Any, created: list[tuple[str, int]], customer: str | None) -> bool:
    if customer is not None and intent.customer != customer:
        return False
    return all(
        intent.created == at if op == "eq" else RANGE_OPS[op](intent.created, at) for op, at in created
    )


def list_payment_intents(
    url: str,
    limit: Any = None,
    starting_after: str | None = None,
    ending_before: str | None = None,
    created: Any = None,
    customer: str | None = None,
    **unknown: Any,
) -> Page:
    if unknown:
        raise UserError(400, f"Received unknown parameter: {sorted(unknown)[0]}")
    size = 10 if limit is None else _int(limit, "limit")
    if not 1 <= size <= 100:
        raise UserError(400, "Invalid limit: must be between 1 and 100")
    if starting_after is not None and ending_before is not None:
        raise UserError(400, "You may only specify one of these parameters: ending_before, starting_after")
    keys = KINDS.get(INTENTS, {})
    cursor = starting_after or ending_before
    if cursor is not None and f"{INTENTS}:{cursor}" not in keys:
        raise UserError(404, f"No such payment_intent: '{cursor}'")
    wanted = _created_filter(created)
    floor = max((at for op, at in wanted if op in ("gt", "gte", "eq")), default=None)
    # starting_after walks older from the cursor; ending_before walks newer from it (the page shown newest first)
    walk = iter(keys) if ending_before is not None else reversed(keys)
    if cursor is not None:
        for key in walk:
            if key == f"{INTENTS}:{cursor}":
                break
    page: list[Any] = []
    for key in walk:
        intent = store.get(key)
        if intent is None:  # removed by a reset of the double's data
            continue
        if ending_before is None and floor is not None and intent.created < floor:
            break  # newest first: every intent from here on is older than the range
        if _matches(intent, wanted, customer):
            page.append(intent)
            if len(page) > size:
                break
    has_more = len(page) > size
    page = page[:size]
    return Page(url, page[::-1] if ending_before is not None else page, has_more)


def install() -> None:
    """Index the store by kind (what it holds already, e.g. read back from a state file, too), list from the
    index, and list PaymentIntents as Stripe does."""
    Store.__setitem__ = _stored
    Store.__delitem__ = _removed
    StripeObject._api_list_all = classmethod(_list_all)
    PaymentIntent._api_list_all = classmethod(lambda cls, url, **params: list_payment_intents(url, **params))
    reindex()


def reindex() -> None:
    """The index from the store as it is (after a bulk load or a change of `created`)."""
    KINDS.clear()
    for key in store:
        KINDS.setdefault(_kind(key), {})[key] = None
    intents = KINDS.get(INTENTS, {})
    # sorted() is stable: the order they were stored in breaks ties
    KINDS[INTENTS] = dict.fromkeys(sorted(intents, key=lambda key: store[key].created))


def seed(count: int, age_s: int, invoice_prefix: str) -> list[str]:
    """`count` confirmed PaymentIntents (a charge each, as our invoices make them; invoice ids `<prefix><n>`)
    created `age_s` seconds ago: a Stripe history for a test without a request per intent. Ids, oldest first."""
    ids = []
    for n in range(count):
        intent = PaymentIntent._api_create(
            confirm=True,
            amount=100 + n,
            currency="usd",
            payment_method="pm_card_visa",
            metadata={"invoiceId": f"{invoice_prefix}{n}", "attempt": "1"},
        )
        intent.created -= age_s
        ids.append(intent.id)
    reindex()  # PaymentIntents stay in `created` order
    return ids
