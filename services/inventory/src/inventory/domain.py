"""Inventory's rules: how many units of each SKU there are, and how orders hold and buy them.

Plain Python: no framework, no I/O. A :class:`Stock` row counts the units on hand and those held
by reservations; what is left to sell is ``available = on_hand - reserved``. Every change goes
through a method that keeps ``0 <= reserved <= on_hand``, so no rule below can oversell or make
stock negative.

A :class:`Reservation` is what one order holds. The commands of the checkout (reserve, release,
commit) and the expiry of a reservation are the functions at the end of this module: each takes
the order's reservation as stored (or None) and a :class:`Stockroom` of the rows it touches, and
returns an :class:`Outcome`: the reservation to store, if it changed, and the answer to publish.
A command sent again gets the same answer again and changes nothing twice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import NamedTuple

SKU_PATTERN = r"^[A-Z0-9-]{3,32}$"
ORDER_ID_MAX = 100
# What the store counts units in (a signed 64-bit integer): a line asking for more is no order.
QUANTITY_MAX = 2**63 - 1
DELTA_MAX = 1_000_000
REASON_MAX = 200
IDEMPOTENCY_KEY_MAX = 200
PAGE_DEFAULT = 100
PAGE_MAX = 500

_SKU = re.compile(SKU_PATTERN)


class UnknownSku(Exception):
    """Unknown SKU."""


class NotEnoughStock(Exception):
    """Not enough stock."""


class InvalidAdjustment(Exception):
    """Invalid adjustment."""


class IdempotencyKeyReused(Exception):
    """Idempotency key reused."""


class InvalidOrder(Exception):
    """Invalid order."""


def check_sku(sku: object) -> str:
    if not isinstance(sku, str) or not _SKU.match(sku):
        raise UnknownSku(f"{sku!r} is not a sku: 3 to 32 upper-case letters, digits and '-'")
    return sku


def check_order_id(order_id: object) -> str:
    if not isinstance(order_id, str) or not 0 < len(order_id) <= ORDER_ID_MAX:
        raise InvalidOrder(f"an order id is 1 to {ORDER_ID_MAX} characters")
    return order_id


@dataclass(frozen=True, slots=True)
class Line:
    """So many units of one SKU."""

    sku: str
    quantity: int


def merge_lines(lines: Iterable[Line]) -> tuple[Line, ...]:
    """One line per SKU, quantities added up, in the order the SKUs first appear."""
    totals: dict[str, int] = {}
    for line in lines:
        if line.quantity <= 0:
            raise InvalidOrder(f"a line holds at least one unit, not {line.quantity} of {line.sku}")
        totals[line.sku] = totals.get(line.sku, 0) + line.quantity
        if totals[line.sku] > QUANTITY_MAX:
            raise InvalidOrder(f"{totals[line.sku]} units of {line.sku} is more than any stock")
    return tuple(Line(sku, quantity) for sku, quantity in totals.items())


@dataclass(frozen=True, slots=True)
class Stock:
    """The units of one SKU. ``seeded`` is the opening quantity, None until the seed gave one;
    ``adjusted`` the sum of the admins' corrections."""

    sku: str
    on_hand: int
    reserved: int
    seeded: int | None
    adjusted: int

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved

    @classmethod
    def open(cls, sku: str) -> Stock:
        """A SKU inventory has just learnt of: nothing on hand yet."""
        return cls(sku=check_sku(sku), on_hand=0, reserved=0, seeded=None, adjusted=0)

    def seed(self, quantity: int) -> Stock:
        """The opening quantity comes in, once: a row that has one keeps it."""
        if quantity < 0:
            raise InvalidAdjustment(f"an opening quantity cannot be negative ({quantity})")
        if self.seeded is not None:
            return self
        return replace(self, on_hand=self.on_hand + quantity, seeded=quantity)

    def adjust(self, delta: int) -> Stock:
        """An admin's correction of the units on hand (a count, a delivery, a breakage)."""
        if delta == 0 or abs(delta) > DELTA_MAX:
            raise InvalidAdjustment(
                f"a delta is a non-zero whole number up to {DELTA_MAX} either way"
            )
        on_hand = self.on_hand + delta
        if on_hand < self.reserved:
            raise NotEnoughStock(
                f"{self.sku} has {self.on_hand} on hand of which {self.reserved} reserved: "
                f"it cannot go down by {-delta}"
            )
        return replace(self, on_hand=on_hand, adjusted=self.adjusted + delta)

    def hold(self, quantity: int) -> Stock:
        """Reserve ``quantity`` of the available units."""
        self._check_available(quantity)
        return replace(self, reserved=self.reserved + quantity)

    def release(self, quantity: int) -> Stock:
        """Give back ``quantity`` reserved units."""
        if not 0 < quantity <= self.reserved:
            raise NotEnoughStock(f"{self.sku} holds {self.reserved} reserved, not {quantity}")
        return replace(self, reserved=self.reserved - quantity)

    def sell(self, quantity: int) -> Stock:
        """Reserved units leave the stock: they are sold."""
        released = self.release(quantity)
        return replace(released, on_hand=released.on_hand - quantity)

    def take(self, quantity: int) -> Stock:
        """Sell available units directly, without a reservation."""
        self._check_available(quantity)
        return replace(self, on_hand=self.on_hand - quantity)

    def _check_available(self, quantity: int) -> None:
        if not 0 < quantity <= self.available:
            raise NotEnoughStock(f"{self.sku} has {self.available} available, not {quantity}")


class Status(StrEnum):
    ACTIVE = "active"
    COMMITTED = "committed"
    RELEASED = "released"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one order holds. A release that came before any reservation leaves a *tombstone*:
    released, with no lines and no expiry, so that the late reservation is refused."""

    order_id: str
    status: Status
    lines: tuple[Line, ...]
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def hold(
        cls, order_id: str, lines: tuple[Line, ...], *, now: datetime, ttl: timedelta
    ) -> Reservation:
        return cls(order_id, Status.ACTIVE, lines, now + ttl, now, now)

    @classmethod
    def tombstone(cls, order_id: str, *, now: datetime) -> Reservation:
        return cls(order_id, Status.RELEASED, (), None, now, now)

    @property
    def holds_stock(self) -> bool:
        """Whether its lines are (still) taken: held, or sold."""
        return self.status in (Status.ACTIVE, Status.COMMITTED)

    def becomes(self, status: Status, *, now: datetime) -> Reservation:
        return replace(self, status=status, updated_at=now)


@dataclass(frozen=True, slots=True)
class Shortage:
    sku: str
    requested: int
    available: int


class OutOfStock(Exception):
    """Out of stock."""

    def __init__(self, shortages: tuple[Shortage, ...]) -> None:
        super().__init__(
            ", ".join(f"{s.requested} x {s.sku} ({s.available} left)" for s in shortages)
        )
        self.shortages = shortages


class Stockroom:
    """The stock rows one transaction works on, and which of them it changed."""

    def __init__(self, rows: Iterable[Stock]) -> None:
        self._rows: dict[str, Stock] = {row.sku: row for row in rows}
        self._changed: dict[str, Stock] = {}

    def __getitem__(self, sku: str) -> Stock:
        return self._rows[sku]

    def available(self, sku: str) -> int:
        """Units of ``sku`` left to reserve; 0 for a SKU inventory does not know."""
        row = self._rows.get(sku)
        return 0 if row is None else row.available

    def changed(self) -> list[Stock]:
        """The rows changed so far, by sku."""
        return [self._changed[sku] for sku in sorted(self._changed)]

    def shortages(self, lines: Iterable[Line]) -> tuple[Shortage, ...]:
        return tuple(
            Shortage(line.sku, line.quantity, self.available(line.sku))
            for line in lines
            if line.quantity > self.available(line.sku)
        )

    def hold(self, lines: Iterable[Line]) -> None:
        """Reserve every line, or (raising :class:`OutOfStock`) none."""
        self._change(self._all_available(lines), Stock.hold)

    def release(self, lines: Iterable[Line]) -> None:
        self._change(lines, Stock.release)

    def sell(self, lines: Iterable[Line]) -> None:
        self._change(lines, Stock.sell)

    def take(self, lines: Iterable[Line]) -> None:
        """Sell every line from what is available, or (raising :class:`OutOfStock`) none."""
        self._change(self._all_available(lines), Stock.take)

    def _all_available(self, lines: Iterable[Line]) -> tuple[Line, ...]:
        """``lines``, once every one of them is available; :class:`OutOfStock` otherwise."""
        lines = tuple(lines)
        if shortages := self.shortages(lines):
            raise OutOfStock(shortages)
        return lines

    def _change(self, lines: Iterable[Line], change: Callable[[Stock, int], Stock]) -> None:
        """Each line's row changed by ``change`` with the line's quantity."""
        for line in lines:
            row = change(self._rows[line.sku], line.quantity)
            self._rows[row.sku] = self._changed[row.sku] = row


# The answers inventory gives to the checkout, one per command (the application publishes each
# as its contract event).


@dataclass(frozen=True, slots=True)
class Reserved:
    reservation: Reservation


@dataclass(frozen=True, slots=True)
class Rejected:
    order_id: str
    reason: str
    shortages: tuple[Shortage, ...] = ()


@dataclass(frozen=True, slots=True)
class Released:
    order_id: str
    reason: str
    lines: tuple[Line, ...]


@dataclass(frozen=True, slots=True)
class Committed:
    order_id: str
    lines: tuple[Line, ...]


Answer = Reserved | Rejected | Released | Committed

OUT_OF_STOCK = "out_of_stock"
RELEASED = "released"
RESERVATION_EXPIRED = "reservation_expired"
REQUESTED = "requested"
EXPIRED = "expired"


class Outcome(NamedTuple):
    """What a command decided: the reservation to store (None: unchanged), the answer to give
    (None: none)."""

    reservation: Reservation | None
    answer: Answer | None


def reserve(
    room: Stockroom,
    existing: Reservation | None,
    order_id: str,
    lines: Iterable[Line],
    *,
    now: datetime,
    ttl: timedelta,
) -> Outcome:
    """Hold every line for the order until ``now + ttl``, or none of them.

    An order that has a reservation already gets its answer again: held or sold, the same
    reservation; released or expired (or released before it ever reserved), a refusal.
    """
    if existing is not None:
        if existing.holds_stock:
            return Outcome(None, Reserved(existing))
        return Outcome(None, Rejected(order_id, RELEASED))
    wanted = merge_lines(lines)
    if not wanted:
        raise InvalidOrder("a reservation holds at least one line")
    try:
        room.hold(wanted)
    except OutOfStock as refusal:
        return Outcome(None, Rejected(order_id, OUT_OF_STOCK, refusal.shortages))
    reservation = Reservation.hold(order_id, wanted, now=now, ttl=ttl)
    return Outcome(reservation, Reserved(reservation))


def release(
    room: Stockroom, existing: Reservation | None, order_id: str, *, now: datetime
) -> Outcome:
    """Give back what the order holds.

    Nothing held yet: remember the release (a tombstone) so a late reservation is refused. Already
    released or expired: the same answer again. Committed: a sale is not undone here, and there
    is no answer.
    """
    if existing is None:
        return Outcome(Reservation.tombstone(order_id, now=now), Released(order_id, REQUESTED, ()))
    if existing.status is Status.ACTIVE:
        room.release(existing.lines)
        return Outcome(
            existing.becomes(Status.RELEASED, now=now),
            Released(order_id, REQUESTED, existing.lines),
        )
    if existing.status is Status.COMMITTED:
        return Outcome(None, None)
    reason = EXPIRED if existing.status is Status.EXPIRED else REQUESTED
    return Outcome(None, Released(order_id, reason, existing.lines))


def commit(
    room: Stockroom, existing: Reservation | None, order_id: str, *, now: datetime
) -> Outcome:
    """Sell what the order holds.

    Held: the units leave the stock. Already sold: the same answer again. Expired or released
    meanwhile: sold from what is available now if every line still is, refused otherwise.
    """
    if existing is None:
        return Outcome(None, Rejected(order_id, RESERVATION_EXPIRED))
    if existing.status is Status.COMMITTED:
        return Outcome(None, Committed(order_id, existing.lines))
    if existing.status is Status.ACTIVE:
        room.sell(existing.lines)
    elif not existing.lines:
        # A tombstone: the order was released before it reserved anything.
        return Outcome(None, Rejected(order_id, RELEASED))
    else:
        try:
            room.take(existing.lines)
        except OutOfStock as refusal:
            return Outcome(None, Rejected(order_id, RESERVATION_EXPIRED, refusal.shortages))
    return Outcome(existing.becomes(Status.COMMITTED, now=now), Committed(order_id, existing.lines))


def expire(room: Stockroom, reservation: Reservation, *, now: datetime) -> Outcome:
    """A reservation not committed by its deadline gives its units back."""
    if reservation.status is not Status.ACTIVE or reservation.expires_at is None:
        return Outcome(None, None)
    if reservation.expires_at > now:
        return Outcome(None, None)
    room.release(reservation.lines)
    return Outcome(
        reservation.becomes(Status.EXPIRED, now=now),
        Released(reservation.order_id, EXPIRED, reservation.lines),
    )


def skus_of(lines: Iterable[Line]) -> list[str]:
    """The SKUs of ``lines`` in the order their rows are locked (by sku, each once)."""
    return sorted({line.sku for line in lines})


@dataclass(frozen=True, slots=True)
class Adjustment:
    """An admin's correction, and the stock available after it (the answer, kept so that the
    same request sent again with its idempotency key gets it again)."""

    sku: str
    delta: int
    reason: str
    key: str | None
    available: int
    created_at: datetime

    def same_request(self, sku: str, delta: int, reason: str) -> bool:
        return (self.sku, self.delta, self.reason) == (sku, delta, reason)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page of a listing starts: after the row with this key (a sku or an order
    id), in a listing of this kind. Keyset paging, so pages neither repeat nor skip rows while
    others are added. The application hands it out as an opaque token (agora.cursor)."""

    listing: str
    after: str

    def __post_init__(self) -> None:
        if not self.after:
            raise ValueError("a page starts after a row")
