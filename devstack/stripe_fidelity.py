"""Where localstripe answers otherwise than Stripe does, made to answer as Stripe, so that code which only works
against the double fails here instead of in production.

- **`latest_charge` is an id unless expanded.** localstripe exports every nested object whole; Stripe returns a
  PaymentIntent's `latest_charge` as its id (in a retrieve, a list, a create, a webhook) unless the request asked
  `expand[]=latest_charge` (`expand[]=data.latest_charge` in a list). A refund is only seen through the charge:
  a reader that forgets the expansion reads "paid" for a refunded payment.
- **A declined confirmation carries its PaymentIntent.** Stripe's card error on `POST /v1/payment_intents` with
  `confirm=true` has `type: card_error` and the declined intent in `error.payment_intent`; localstripe's has
  neither, so a caller had to list PaymentIntents to find the intent it had just created.
"""

from __future__ import annotations

from typing import Any

from localstripe.errors import UserError
from localstripe.resources import PaymentIntent

_export = PaymentIntent._export
_report_failure = PaymentIntent._report_failure


def _expands(expand: list[str] | None, field: str) -> bool:
    return any(path.split(".", 1)[0] == field for path in expand or [])


def _intent_export(self: PaymentIntent, expand: list[str] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = _export(self, expand=expand)
    charge = obj.get("latest_charge")
    if isinstance(charge, dict) and not _expands(expand, "latest_charge"):
        obj["latest_charge"] = charge["id"]
    return obj


def _intent_report_failure(self: PaymentIntent) -> None:
    try:
        _report_failure(self)
    except UserError as error:
        if error.code == 402:
            error.body["error"]["type"] = "card_error"
            error.body["error"]["payment_intent"] = self._export()
        raise


def install() -> None:
    PaymentIntent._export = _intent_export
    PaymentIntent._report_failure = _intent_report_failure
