"""Inventory's use cases: one transaction each, over the :class:`Stockrooms` port.

Handlers are plain functions ``handler(connection, stockrooms, ...)`` that the unit of work runs:
``stockrooms`` keeps the stock and the reservations within that transaction (the SQL one in
production), so this module names no table. Bootstrap chooses it and hands it, with the rules
from the settings, to the entry points in :class:`Parts`. Each command handler publishes its
answer with :func:`agora.messaging.record`, in the transaction of the change it reports.

Row locks are taken in one order everywhere (the order's reservation first, then its stock rows
by sku), so two replicas working on the same SKUs wait for each other instead of deadlocking,
and each sees the other's committed counts before it decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog
from sqlalchemy import Connection

from agora.cursor import CursorCodec, InvalidCursor, Page, paged
from agora.messaging.outbox import record
from contracts.inventory import (
    Shortage as ShortageOut,
)
from contracts.inventory import (
    StockCommitted,
    StockLine,
    StockRejected,
    StockReleased,
    StockReserved,
)
from inventory import domain
from inventory.domain import (
    Adjustment,
    Answer,
    Committed,
    Cursor,
    IdempotencyKeyReused,
    Line,
    Rejected,
    Released,
    Reservation,
    Reserved,
    Status,
    Stock,
    Stockroom,
    UnknownSku,
    check_order_id,
    check_sku,
    skus_of,
)

log = structlog.get_logger("inventory")

STOCK_LISTING = "stock"
RESERVATION_LISTING = "reservations"


@dataclass(frozen=True, slots=True)
class ReservationFilter:
    status: Status | None = None
    order_id: str | None = None


@dataclass(frozen=True, slots=True)
class Seed:
    """The opening stock shipped with the service: units per SKU."""

    name: str
    quantities: dict[str, int]


class Stockrooms(Protocol):
    """The stock of every SKU, the orders' reservations of it and the admins' adjustments,
    within the transaction of ``connection``."""

    def stock(
        self, connection: Connection, skus: Sequence[str], *, for_update: bool = False
    ) -> list[Stock]:
        """The rows of those of ``skus`` that exist, by sku; ``for_update`` locks them in that
        order."""

    def open(self, connection: Connection, skus: Iterable[str]) -> None:
        """Add a row at zero for each of ``skus`` that has none (a row that exists is kept)."""

    def save(self, connection: Connection, rows: Iterable[Stock]) -> None: ...

    def reservation(
        self, connection: Connection, order_id: str, *, for_update: bool = False
    ) -> Reservation | None: ...

    def add_reservation(self, connection: Connection, reservation: Reservation) -> None: ...

    def save_reservation(self, connection: Connection, reservation: Reservation) -> None: ...

    def due(self, connection: Connection, now: datetime, limit: int) -> list[Reservation]:
        """Up to ``limit`` active reservations that expired before ``now``, locked; those another
        transaction has locked are passed over."""

    def stock_page(self, connection: Connection, after: str | None, limit: int) -> list[Stock]: ...

    def reservation_page(
        self, connection: Connection, where: ReservationFilter, after: str | None, limit: int
    ) -> list[Reservation]: ...

    def adjustment(self, connection: Connection, key: str) -> Adjustment | None: ...

    def add_adjustment(self, connection: Connection, adjustment: Adjustment) -> None:
        """Store it; :class:`IdempotencyKeyReused` when another request took its key first."""


@dataclass(frozen=True, slots=True)
class Parts:
    """What bootstrap chooses for the routes, the subscriptions and the expiry timer."""

    stockrooms: Stockrooms
    # How long a reservation holds its units before it expires.
    reservation_ttl: timedelta


CURSORS = CursorCodec(Cursor)


# Reads.


def get_stock(connection: Connection, stockrooms: Stockrooms, sku: str) -> Stock:
    rows = stockrooms.stock(connection, [check_sku(sku)])
    if not rows:
        raise UnknownSku(f"there is no stock of sku {sku!r}")
    return rows[0]


def read_cursor(token: str, listing: str) -> Cursor:
    """The cursor in ``token``, which must have been handed out by ``listing``."""
    cursor = CURSORS.decode(token)
    if cursor.listing != listing:
        raise InvalidCursor("the cursor is not one this service handed out for this listing")
    return cursor


def list_stock(
    connection: Connection, stockrooms: Stockrooms, after: Cursor | None, limit: int
) -> Page[Stock]:
    rows = stockrooms.stock_page(connection, after.after if after else None, limit + 1)
    return paged(CURSORS, rows, limit, lambda last: Cursor(STOCK_LISTING, last.sku))


def list_reservations(
    connection: Connection,
    stockrooms: Stockrooms,
    where: ReservationFilter,
    after: Cursor | None,
    limit: int,
) -> Page[Reservation]:
    rows = stockrooms.reservation_page(connection, where, after.after if after else None, limit + 1)
    return paged(CURSORS, rows, limit, lambda last: Cursor(RESERVATION_LISTING, last.order_id))


# Stock.


def seed_stock(connection: Connection, stockrooms: Stockrooms, seed: Seed) -> int:
    """Give each SKU of ``seed`` its opening quantity, unless its row has one; how many got it.

    Safe in any order with ProductCreated (which opens a row at zero, and never touches the
    opening quantity), and when replicas start together: rows are opened with an insert that
    skips existing ones, then locked, so the second replica finds the quantities set.
    """
    skus = sorted(check_sku(sku) for sku in seed.quantities)
    stockrooms.open(connection, skus)
    rows = stockrooms.stock(connection, skus, for_update=True)
    opened = [row.seed(seed.quantities[row.sku]) for row in rows if row.seeded is None]
    stockrooms.save(connection, opened)
    return len(opened)


def open_stock(connection: Connection, stockrooms: Stockrooms, sku: str) -> None:
    """A product is new in the catalogue: its stock starts at zero, unless it has a row."""
    stockrooms.open(connection, [check_sku(sku)])


def adjust_stock(
    connection: Connection,
    stockrooms: Stockrooms,
    sku: str,
    delta: int,
    reason: str,
    key: str | None,
) -> Adjustment:
    """Correct the units on hand of ``sku`` by ``delta``.

    With an idempotency key that was used before, the first answer, and nothing applied again.
    The row is locked before the key is looked up, so the same request sent twice at once is
    applied once.
    """
    rows = stockrooms.stock(connection, [check_sku(sku)], for_update=True)
    if not rows:
        raise UnknownSku(f"there is no stock of sku {sku!r}")
    if key is not None and (earlier := stockrooms.adjustment(connection, key)) is not None:
        if not earlier.same_request(sku, delta, reason):
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used for another adjustment; use a new key"
            )
        return earlier
    row = rows[0].adjust(delta)
    stockrooms.save(connection, [row])
    adjustment = Adjustment(sku, delta, reason, key, row.available, _now())
    stockrooms.add_adjustment(connection, adjustment)
    return adjustment


# The checkout's commands.


def reserve_stock(
    connection: Connection,
    stockrooms: Stockrooms,
    order_id: str,
    lines: Sequence[Line],
    *,
    ttl: timedelta,
) -> None:
    existing = stockrooms.reservation(connection, check_order_id(order_id), for_update=True)
    room = Stockroom(
        () if existing else stockrooms.stock(connection, skus_of(lines), for_update=True)
    )
    outcome = domain.reserve(room, existing, order_id, lines, now=_now(), ttl=ttl)
    stockrooms.save(connection, room.changed())
    _settle(connection, stockrooms, outcome, new=True)


def release_stock(connection: Connection, stockrooms: Stockrooms, order_id: str) -> None:
    existing = stockrooms.reservation(connection, check_order_id(order_id), for_update=True)
    room = _room_for(connection, stockrooms, existing)
    outcome = domain.release(room, existing, order_id, now=_now())
    if existing is not None and existing.status is Status.COMMITTED:
        log.warning("release of a committed order ignored: a sale is not undone", order=order_id)
    stockrooms.save(connection, room.changed())
    _settle(connection, stockrooms, outcome, new=existing is None)


def commit_stock(connection: Connection, stockrooms: Stockrooms, order_id: str) -> None:
    existing = stockrooms.reservation(connection, check_order_id(order_id), for_update=True)
    if existing is None:
        log.warning("commit of an order that reserved nothing", order=order_id)
    room = _room_for(connection, stockrooms, existing)
    outcome = domain.commit(room, existing, order_id, now=_now())
    stockrooms.save(connection, room.changed())
    _settle(connection, stockrooms, outcome, new=False)


def expire_reservations(
    connection: Connection, stockrooms: Stockrooms, *, now: datetime, limit: int
) -> int:
    """Release up to ``limit`` active reservations that expired before ``now``; how many."""
    due = stockrooms.due(connection, now, limit)
    lines = [line for reservation in due for line in reservation.lines]
    room = Stockroom(stockrooms.stock(connection, skus_of(lines), for_update=True))
    outcomes = [domain.expire(room, reservation, now=now) for reservation in due]
    stockrooms.save(connection, room.changed())
    for outcome in outcomes:
        _settle(connection, stockrooms, outcome, new=False)
    return len(due)


def _room_for(
    connection: Connection, stockrooms: Stockrooms, reservation: Reservation | None
) -> Stockroom:
    if reservation is None:
        return Stockroom(())
    return Stockroom(stockrooms.stock(connection, skus_of(reservation.lines), for_update=True))


def _settle(
    connection: Connection, stockrooms: Stockrooms, outcome: domain.Outcome, *, new: bool
) -> None:
    """Store the order's reservation as the command left it, and publish the answer."""
    if outcome.reservation is not None:
        if new:
            stockrooms.add_reservation(connection, outcome.reservation)
        else:
            stockrooms.save_reservation(connection, outcome.reservation)
    if outcome.answer is not None:
        order_id = _order_of(outcome.answer)
        record(connection, _event(outcome.answer), aggregate=order_id)


def _order_of(answer: Answer) -> str:
    return answer.reservation.order_id if isinstance(answer, Reserved) else answer.order_id


def _lines(lines: Iterable[Line]) -> tuple[StockLine, ...]:
    return tuple(StockLine(sku=line.sku, quantity=line.quantity) for line in lines)


def _event(answer: Answer) -> StockReserved | StockRejected | StockReleased | StockCommitted:
    """The contract event that gives ``answer``."""
    match answer:
        case Reserved(reservation):
            assert reservation.expires_at is not None
            return StockReserved(
                order_id=reservation.order_id,
                lines=_lines(reservation.lines),
                expires_at=reservation.expires_at,
            )
        case Rejected(order_id, reason, shortages):
            return StockRejected(
                order_id=order_id,
                reason=reason,
                shortages=tuple(
                    ShortageOut(sku=s.sku, requested=s.requested, available=s.available)
                    for s in shortages
                ),
            )
        case Released(order_id, reason, lines):
            return StockReleased(order_id=order_id, reason=reason, lines=_lines(lines))
        case Committed(order_id, lines):
            return StockCommitted(order_id=order_id, lines=_lines(lines))


def _now() -> datetime:
    return datetime.now(UTC)
