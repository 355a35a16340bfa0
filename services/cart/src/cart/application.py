"""Cart's use cases, over two ports: :class:`Carts`, which keeps each user's lines (a SQL table,
or one Redis hash per user), and :class:`CatalogService`, which prices them. Bootstrap chooses
both and hands them, with the clock and the currency of an empty cart, to the entry points in
:class:`Parts`.

A route's use case is a step that calls out, ``async def verb(parts, command)``: it asks the
catalog once, then changes the cart. The catalog is asked *before* the cart changes, so a refusal
(an unknown product, a catalog that cannot answer) leaves the cart as it was. Carts in Redis live
outside any transaction, so these steps take no unit of work.

The consumer's use case, :func:`remove_ordered`, is a transaction, ``def verb(connection, carts,
...)``, in the connection that records the event in the inbox, as the chassis runs every handler.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import Connection

from cart import domain
from cart.domain import Cart, Line, Product, check_addable, check_quantity, check_sku

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class CatalogService(Protocol):
    """Products as the catalog service sells them now."""

    async def products(self, skus: Collection[str]) -> dict[str, Product]:
        """The products of ``skus`` the catalogue knows (for sale or not), by sku."""


class Carts(Protocol):
    """The users' carts: where their lines live.

    The coroutines serve the routes. ``held`` and ``drop`` serve the consumer: they run inside
    its transaction (``connection``), synchronously, as the chassis runs every handler.
    """

    async def lines(self, user_id: str) -> list[Line]:
        """The user's lines, in no particular order."""

    async def put(self, user_id: str, line: Line) -> list[Line]:
        """Set ``line`` (a new line, or a new quantity); the user's lines after.

        :class:`cart.domain.TooManyLines` when it is a new line and the cart has LINES_MAX
        already, checked in the same atomic step as the write: two requests at once cannot
        both pass it.
        """

    async def remove(self, user_id: str, sku: str) -> list[Line]:
        """Remove the line of ``sku``, if there is one; the user's lines after."""

    async def clear(self, user_id: str) -> None: ...

    def held(self, connection: Connection, user_id: str, skus: Sequence[str]) -> list[Line]:
        """The user's lines of ``skus``, kept from changing until ``drop`` (SQL: locked)."""

    def drop(self, connection: Connection, user_id: str, lines: Sequence[Line]) -> None:
        """Remove each of ``lines`` unless it was set again since it was read."""


@dataclass(frozen=True, slots=True)
class Parts:
    """What bootstrap chooses for the routes."""

    carts: Carts
    catalog: CatalogService
    # The currency an empty cart is shown in.
    currency: str
    # When a line is set.
    clock: Clock = utc_now


@dataclass(frozen=True, slots=True)
class ViewCart:
    user_id: str


@dataclass(frozen=True, slots=True)
class SetQuantity:
    """Set how many units of ``sku`` the user's cart holds; 0 removes the line."""

    user_id: str
    sku: str
    quantity: int


@dataclass(frozen=True, slots=True)
class RemoveLine:
    user_id: str
    sku: str


@dataclass(frozen=True, slots=True)
class EmptyCart:
    user_id: str


async def view_cart(parts: Parts, command: ViewCart) -> Cart:
    """The user's cart priced now; the parts' currency is shown when no line has a price."""
    lines = await parts.carts.lines(command.user_id)
    return await _priced(parts, lines, set(), {})


async def set_quantity(parts: Parts, command: SetQuantity) -> Cart:
    """Set how many units of the sku the cart holds; 0 removes the line."""
    now = parts.clock()
    sku = check_sku(command.sku)
    if check_quantity(command.quantity) == 0:
        return await remove_line(parts, RemoveLine(command.user_id, sku))
    lines = await parts.carts.lines(command.user_id)
    asked = _skus(lines) | {sku}
    products = await _ask(parts.catalog, asked)
    check_addable(lines, sku, products)
    after = await parts.carts.put(command.user_id, Line(sku, command.quantity, now))
    return await _priced(parts, after, asked, products)


async def remove_line(parts: Parts, command: RemoveLine) -> Cart:
    """Remove the line of the sku; a line that is not there is no error."""
    sku = check_sku(command.sku)
    asked = _skus(await parts.carts.lines(command.user_id)) - {sku}
    products = await _ask(parts.catalog, asked)
    after = await parts.carts.remove(command.user_id, sku)
    return await _priced(parts, after, asked, products)


async def empty_cart(parts: Parts, command: EmptyCart) -> Cart:
    await parts.carts.clear(command.user_id)
    return domain.empty(parts.currency)


def remove_ordered(
    connection: Connection, carts: Carts, user_id: str, skus: Sequence[str], placed_at: datetime
) -> None:
    """An order was placed: its SKUs leave the user's cart, unless set again since."""
    taken = domain.taken_by_order(carts.held(connection, user_id, skus), placed_at)
    carts.drop(connection, user_id, taken)


async def _ask(catalog: CatalogService, skus: Collection[str]) -> dict[str, Product]:
    return await catalog.products(sorted(skus)) if skus else {}


async def _priced(
    parts: Parts,
    lines: Sequence[Line],
    asked: Collection[str],
    products: Mapping[str, Product],
) -> Cart:
    """``lines`` priced from ``products``, the catalog's answer about the skus ``asked``.

    A line another request added meanwhile was not asked about: it is asked now, rather than
    shown as unknown.
    """
    missing = _skus(lines) - set(asked)
    if missing:
        products = {**products, **await _ask(parts.catalog, missing)}
    return domain.price(lines, products, currency=parts.currency)


def _skus(lines: Iterable[Line]) -> set[str]:
    return {line.sku for line in lines}
