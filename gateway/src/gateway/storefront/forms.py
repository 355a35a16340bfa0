"""The storefront's forms: what a user typed, and the services' refusals turned into messages
beside the fields they are about."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ADDRESS_FIELDS = ("name", "line1", "line2", "city", "postal_code", "country")
CARD_FIELD = "card_number"
# The test cards of the simulated processor, as the checkout page lists them.
TEST_CARDS = (
    ("4242 4242 4242 4242", "approved"),
    ("4000 0000 0000 0002", "declined"),
    ("4000 0000 0000 9995", "insufficient funds"),
    ("4000 0000 0000 0119", "processor error"),
    ("4000 0000 0000 0259", "processor timeout"),
)
# Words for what a checkout field holds, for messages that are not the field's own.
_REQUIRED = "Fill this in."
_FIELD_MESSAGES = {
    ("country", "string_pattern_mismatch"): "Use the two-letter country code, such as GB or FR.",
    ("postal_code", "string_too_long"): "A postal code has at most 20 characters.",
}
# Why orders refused a whole checkout (its problem's type), in the shopper's words.
CHECKOUT_REFUSALS = {
    "empty-cart": "Your cart is empty: add something before checking out.",
    "cart-not-orderable": "Some items in your cart can no longer be ordered; "
    "remove them from your cart and try again.",
    "product-unavailable": "A product in your cart is no longer for sale; "
    "remove it from your cart and try again.",
    "mixed-currencies": "Your cart holds products priced in different currencies; "
    "order them separately.",
    "idempotency-key-reused": "This form was already used for another order; "
    "check your orders, or submit it again to place a new one.",
}
# Why an order was cancelled (orders' `reason`), as the order page says it.
CANCEL_REASONS = {
    "out_of_stock": "Some of the items are out of stock.",
    "payment_declined": "Your card was declined.",
    "payment_failed": "The payment could not be processed.",
    "customer_cancelled": "You cancelled this order.",
    "stock_timeout": "We could not confirm in time that the items are in stock.",
    "payment_timeout": "The payment was not confirmed in time.",
    "reservation_expired": "The items were no longer held for you when the payment came through.",
}
GENERAL_CANCEL_REASON = "There was a problem with this order."


def cancel_reason(reason: str | None) -> str:
    if not reason:
        return ""
    return CANCEL_REASONS.get(reason, GENERAL_CANCEL_REASON)


@dataclass
class Form:
    """What a form held and what is wrong with it: messages by field, and for the whole form."""

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.general

    def error(self, name: str, message: str) -> None:
        self.errors.setdefault(name, message)


def field_errors(problem: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, str]:
    """A 422's ``errors`` (``{loc: ["body", "shipping_address", "city"], msg, type}``) by the
    name of the field each is about: the last part of its ``loc`` that names one of ``fields``.
    An error about no field (the body as a whole) is filed under ``""``."""
    found: dict[str, str] = {}
    issues = problem.get("errors")
    if not isinstance(issues, list):
        return found
    for issue in issues:
        if not isinstance(issue, dict):
            continue
        loc = issue.get("loc")
        names = [part for part in loc if isinstance(part, str)] if isinstance(loc, list) else []
        name = next((part for part in reversed(names) if part in fields), "")
        found.setdefault(name, _message(name, str(issue.get("type", "")), issue.get("msg")))
    return found


def _message(name: str, kind: str, msg: object) -> str:
    if (name, kind) in _FIELD_MESSAGES:
        return _FIELD_MESSAGES[(name, kind)]
    if kind in ("missing", "string_too_short"):
        return _REQUIRED
    text = str(msg or "This is not valid.")
    text = text.removeprefix("Value error, ")
    text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def checkout_body(values: Mapping[str, str]) -> dict[str, Any]:
    """The order orders is asked to place from the checkout form: the cart, to this address."""
    address: dict[str, Any] = {name: values.get(name, "").strip() for name in ADDRESS_FIELDS}
    address["country"] = address["country"].upper()
    address["line2"] = address["line2"] or None
    return {"shipping_address": address, "card_number": values.get(CARD_FIELD, "").strip()}


def fields_or_general(document: Mapping[str, Any], fields: Iterable[str], form: Form) -> None:
    """A 422's messages beside the ``fields`` they are about; the rest for the whole form."""
    messages = field_errors(document, tuple(fields))
    general = messages.pop("", None)
    for name, message in messages.items():
        form.error(name, message)
    if general or not messages:
        form.general.append(general or sentence(str(document.get("detail") or "Check the form.")))


def sentence(text: str) -> str:
    """A service's words as a sentence: a capital first, a stop last."""
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."
