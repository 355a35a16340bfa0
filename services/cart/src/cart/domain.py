"""The cart's rules: what a line may hold, how a cart is priced, what an order takes out of it.

Plain Python: no framework, no I/O. A cart is the :class:`Line` s one user set, a quantity of a
SKU each, with the moment it was last set. It holds no price: the catalogue prices it each time
it is shown (:func:`price`), so a shopper always sees today's prices.

The limits are those orders puts on an order, so that any cart can be checked out as it is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

SKU_PATTERN = r"^[A-Z0-9-]{3,32}$"
# Orders takes at most LINES_MAX lines of at most QUANTITY_MAX units each.
LINES_MAX = 50
QUANTITY_MAX = 100

_SKU = re.compile(SKU_PATTERN)


class InvalidSku(Exception):
    """Invalid SKU."""


class InvalidQuantity(Exception):
    """Invalid quantity."""


class TooManyLines(Exception):
    """Too many lines."""

    def __init__(self) -> None:
        super().__init__(
            f"a cart holds at most {LINES_MAX} different products: remove one to add another"
        )


class ProductNotFound(Exception):
    """Product not found."""


class ProductUnavailable(Exception):
    """Product not for sale."""


class MixedCurrencies(Exception):
    """Products priced in different currencies."""


def check_sku(sku: object) -> str:
    if not isinstance(sku, str) or not _SKU.match(sku):
        raise InvalidSku(f"{sku!r} is not a sku: 3 to 32 upper-case letters, digits and '-'")
    return sku


def check_quantity(quantity: object) -> int:
    """A quantity to set: 0 (the line goes) to QUANTITY_MAX."""
    if type(quantity) is not int or not 0 <= quantity <= QUANTITY_MAX:
        raise InvalidQuantity(f"a quantity is a whole number from 0 to {QUANTITY_MAX}")
    return quantity


@dataclass(frozen=True, slots=True)
class Line:
    """So many units of one SKU, as the shopper last set them at ``updated_at``."""

    sku: str
    quantity: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Product:
    """A product as the catalogue sells it now."""

    sku: str
    name: str
    price: int
    currency: str
    active: bool


@dataclass(frozen=True, slots=True)
class Item:
    """A line as the shopper sees it. ``name`` is None when the catalogue does not know the
    product (any more); ``unit_price`` is None when the line cannot be bought as the cart is:
    the product is unknown, no longer sold, or priced in another currency than the cart."""

    sku: str
    quantity: int
    name: str | None
    unit_price: int | None

    @property
    def available(self) -> bool:
        return self.unit_price is not None

    @property
    def line_total(self) -> int | None:
        return None if self.unit_price is None else self.unit_price * self.quantity


@dataclass(frozen=True, slots=True)
class Cart:
    """A priced cart: its items in the order they were set, the total of those available, and
    its currency."""

    items: tuple[Item, ...]
    total: int
    currency: str


def price(lines: Iterable[Line], products: Mapping[str, Product], *, currency: str) -> Cart:
    """The cart of ``lines`` priced from the catalogue's answer ``products``.

    Its items come in the order their lines were last set, the latest last (by sku when set at
    the same moment). Its currency is that of its first line for sale, or ``currency`` when
    none is. A line that cannot be bought is shown without a price and counts nothing in the
    total, so the shopper sees it and can remove it; orders refuses a cart that still holds one.
    """
    in_order = sorted(lines, key=_set_order)
    currency = _currency(in_order, products) or currency
    items = tuple(_item(line, products.get(line.sku), currency) for line in in_order)
    return Cart(items, sum(item.line_total or 0 for item in items), currency)


def empty(currency: str) -> Cart:
    return Cart((), 0, currency)


def check_addable(lines: Sequence[Line], sku: str, products: Mapping[str, Product]) -> None:
    """Raise unless ``sku`` may be set in a cart of ``lines``: the catalogue sells it, in the
    currency of the cart's other lines, and it fits in (a line already there always does)."""
    product = products.get(sku)
    if product is None:
        raise ProductNotFound(f"there is no product with sku {sku!r}")
    if not product.active:
        raise ProductUnavailable(f"the product {sku!r} is no longer sold")
    others = [line for line in lines if line.sku != sku]
    currency = _currency(others, products)
    if currency is not None and product.currency != currency:
        raise MixedCurrencies(
            f"the cart is priced in {currency} and {sku!r} in {product.currency}: "
            "an order is paid in one currency"
        )
    if len(others) == len(lines) and len(lines) >= LINES_MAX:
        raise TooManyLines()


def taken_by_order(lines: Iterable[Line], placed_at: datetime) -> list[Line]:
    """Which of ``lines`` (of SKUs an order holds) the order took: those not set again after it
    was placed. A line set later is the shopper adding the product back, and stays."""
    return [line for line in lines if line.updated_at <= placed_at]


def _set_order(line: Line) -> tuple[datetime, str]:
    return line.updated_at, line.sku


def _on_sale(line: Line, products: Mapping[str, Product]) -> Product | None:
    product = products.get(line.sku)
    return product if product is not None and product.active else None


def _currency(lines: Iterable[Line], products: Mapping[str, Product]) -> str | None:
    for line in sorted(lines, key=_set_order):
        if (product := _on_sale(line, products)) is not None:
            return product.currency
    return None


def _item(line: Line, product: Product | None, currency: str) -> Item:
    if product is None:
        return Item(line.sku, line.quantity, None, None)
    sold = product.active and product.currency == currency
    return Item(line.sku, line.quantity, product.name, product.price if sold else None)
