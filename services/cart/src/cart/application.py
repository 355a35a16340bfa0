"""Cart's use cases, over two ports: the :class:`CartStore` that keeps each user's lines (a SQL
table, or one Redis hash per user) and the :class:`Catalogue` that prices them.

A route's use case is a coroutine: it asks the catalogue once, then changes the store. The
catalogue is asked *before* the store changes, so a refusal (an unknown product, a catalogue that
cannot answer) leaves the cart as it was.

The consumer's use case, :func:`remove_ordered`, is a plain function over the session of the
transaction that records the event in the inbox, as the chassis runs every handler.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy.orm import Session

from cart import domain
from cart.domain import Cart, Line, Product, check_addable, check_quantity, check_sku

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Catalogue(Protocol):
    """Products as the catalog service sells them now."""

    async def products(self, skus: Collection[str]) -> dict[str, Product]:
        """The products of ``skus`` the catalogue knows (for sale or not), by sku."""


class CartStore(Protocol):
    """Where the carts' lines live.

    The coroutines serve the routes. ``held`` and ``drop`` serve the consumer: they run inside
    its transaction (``session``), synchronously, as the chassis runs every handler.
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

    def held(self, session: Session, user_id: str, skus: Sequence[str]) -> list[Line]:
        """The user's lines of ``skus``, kept from changing until ``drop`` (SQL: locked)."""

    def drop(self, session: Session, user_id: str, lines: Sequence[Line]) -> None:
        """Remove each of ``lines`` unless it was set again since it was read."""


async def view_cart(store: CartStore, catalogue: Catalogue, user_id: str, *, currency: str) -> Cart:
    """The user's cart priced now; ``currency`` is shown when no line has a price."""
    return await _priced(catalogue, await store.lines(user_id), set(), {}, currency=currency)


async def set_quantity(
    store: CartStore,
    catalogue: Catalogue,
    user_id: str,
    sku: str,
    quantity: int,
    *,
    now: datetime,
    currency: str,
) -> Cart:
    """Set how many units of ``sku`` the cart holds; 0 removes the line."""
    sku = check_sku(sku)
    if check_quantity(quantity) == 0:
        return await remove_line(store, catalogue, user_id, sku, currency=currency)
    lines = await store.lines(user_id)
    asked = _skus(lines) | {sku}
    products = await _ask(catalogue, asked)
    check_addable(lines, sku, products)
    after = await store.put(user_id, Line(sku, quantity, now))
    return await _priced(catalogue, after, asked, products, currency=currency)


async def remove_line(
    store: CartStore, catalogue: Catalogue, user_id: str, sku: str, *, currency: str
) -> Cart:
    """Remove the line of ``sku``; a line that is not there is no error."""
    sku = check_sku(sku)
    asked = _skus(await store.lines(user_id)) - {sku}
    products = await _ask(catalogue, asked)
    after = await store.remove(user_id, sku)
    return await _priced(catalogue, after, asked, products, currency=currency)


async def empty_cart(store: CartStore, user_id: str, *, currency: str) -> Cart:
    await store.clear(user_id)
    return domain.empty(currency)


def remove_ordered(
    session: Session, store: CartStore, user_id: str, skus: Sequence[str], placed_at: datetime
) -> None:
    """An order was placed: its SKUs leave the user's cart, unless set again since."""
    taken = domain.taken_by_order(store.held(session, user_id, skus), placed_at)
    store.drop(session, user_id, taken)


async def _ask(catalogue: Catalogue, skus: Collection[str]) -> dict[str, Product]:
    return await catalogue.products(sorted(skus)) if skus else {}


async def _priced(
    catalogue: Catalogue,
    lines: Sequence[Line],
    asked: Collection[str],
    products: Mapping[str, Product],
    *,
    currency: str,
) -> Cart:
    """``lines`` priced from ``products``, the catalogue's answer about the skus ``asked``.

    A line another request added meanwhile was not asked about: it is asked now, rather than
    shown as unknown.
    """
    missing = _skus(lines) - set(asked)
    if missing:
        products = {**products, **await _ask(catalogue, missing)}
    return domain.price(lines, products, currency=currency)


def _skus(lines: Iterable[Line]) -> set[str]:
    return {line.sku for line in lines}
