"""Reading orders: one order for its owner or an admin, and a listing a page at a time. Both are
hot (ADR 56): an order's page and its live status read it again and again."""

from __future__ import annotations

from sqlalchemy import Connection

from agora.cursor import CursorCodec, Page, paged
from orders.application.ports import Listing, Orders, Viewer
from orders.domain import Cursor, Order, OrderNotFound

CURSORS = CursorCodec(Cursor)


def get_order(connection: Connection, orders: Orders, order_id: str, viewer: Viewer) -> Order:
    return visible(orders.get(connection, order_id), order_id, viewer)


def list_orders(connection: Connection, orders: Orders, listing: Listing) -> Page[Order]:
    # One row more than the page shows whether another page follows.
    rows = orders.listing(connection, listing, listing.limit + 1)
    return paged(CURSORS, rows, listing.limit, Cursor.after)


def visible(order: Order | None, order_id: str, viewer: Viewer) -> Order:
    """``order`` when ``viewer`` may see it; :class:`OrderNotFound` when there is none or it is
    someone else's: its existence is none of the caller's business."""
    if order is None or not viewer.may_see(order):
        raise OrderNotFound(f"there is no order {order_id!r}")
    return order
