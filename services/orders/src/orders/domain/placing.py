"""Placing an order: its lines priced from the catalogue's answer, its card number checked
before payments turns it into a token, a cart's lines taken as an order's, and what tells two
requests sent with one Idempotency-Key apart."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from orders.domain.order import Address, Line, Requested

SKU_PATTERN = r"^[A-Z0-9-]{3,32}$"
COUNTRY_PATTERN = r"^[A-Z]{2}$"
LINES_MAX = 50
QUANTITY_MAX = 100
CARD_DIGITS_MIN = 12
CARD_DIGITS_MAX = 19
_DIGITS = frozenset("0123456789")


class ProductUnavailable(Exception):
    """Product not for sale."""


class MixedCurrencies(Exception):
    """Products priced in different currencies."""


class InvalidCard(Exception):
    """Invalid card number."""


class IdempotencyKeyReused(Exception):
    """Idempotency-Key already used for another order."""


class EmptyCart(Exception):
    """Cart is empty."""


class CartNotOrderable(Exception):
    """Cart cannot be ordered as it is."""


@dataclass(frozen=True, slots=True)
class Priced:
    """A product as the catalogue sells it at checkout."""

    sku: str
    name: str
    price: int
    currency: str
    active: bool


def price(
    requested: Sequence[Requested], prices: Mapping[str, Priced]
) -> tuple[tuple[Line, ...], int, str]:
    """The order's lines priced from the catalogue, their total, and their one currency."""
    lines = []
    for wanted in requested:
        product = prices.get(wanted.sku)
        if product is None:
            raise ProductUnavailable(f"there is no product with sku {wanted.sku!r}")
        if not product.active:
            raise ProductUnavailable(f"the product {wanted.sku!r} is no longer sold")
        lines.append(Line(wanted.sku, product.name, wanted.quantity, product.price))
    currencies = {prices[line.sku].currency for line in lines}
    if len(currencies) != 1:
        raise MixedCurrencies(
            "the products are priced in different currencies: " + ", ".join(sorted(currencies))
        )
    return tuple(lines), sum(line.line_total for line in lines), currencies.pop()


def card_digits(number: str) -> str:
    """The digits of a card number given with or without spaces; :class:`InvalidCard` when it is
    not one. The messages never repeat the number."""
    if not number or any(c not in _DIGITS and c != " " for c in number):
        raise InvalidCard("card_number may hold only digits and spaces")
    digits = number.replace(" ", "")
    if not CARD_DIGITS_MIN <= len(digits) <= CARD_DIGITS_MAX:
        raise InvalidCard(f"card_number must have {CARD_DIGITS_MIN} to {CARD_DIGITS_MAX} digits")
    if not luhn(digits):
        raise InvalidCard("card_number is not a card number: its check digit is wrong")
    return digits


def luhn(digits: str) -> bool:
    total = 0
    for position, character in enumerate(reversed(digits)):
        digit = int(character)
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def from_cart(requested: Sequence[Requested]) -> tuple[Requested, ...]:
    """The cart's lines as an order's, or why the cart cannot be ordered as it is."""
    if not requested:
        raise EmptyCart("the cart is empty: add products to it, or send the order's lines")
    if len(requested) > LINES_MAX:
        raise CartNotOrderable(f"an order has at most {LINES_MAX} lines; the cart has more")
    skus = [line.sku for line in requested]
    if len(set(skus)) != len(skus) or any(
        not 1 <= line.quantity <= QUANTITY_MAX for line in requested
    ):
        raise CartNotOrderable("the cart holds a line no order can have")
    return tuple(requested)


def fingerprint(requested: Sequence[Requested] | None, address: Address, card_number: str) -> str:
    """What tells two bodies sent with one Idempotency-Key apart.

    An order from the cart (``requested`` None) is told by that alone, not by what the cart held:
    a retry after the cart was emptied by this very order must find the order, not refuse.

    The card number enters by its last four digits only: a full number could be found again
    from its hash by trying every number with the same issuer and check digit.
    """
    canonical = {
        "lines": "cart" if requested is None else [[r.sku, r.quantity] for r in requested],
        "shipping_address": {
            "name": address.name,
            "line1": address.line1,
            "line2": address.line2,
            "city": address.city,
            "postal_code": address.postal_code,
            "country": address.country,
        },
        "card_last4": card_number.replace(" ", "")[-4:],
    }
    raw = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()
