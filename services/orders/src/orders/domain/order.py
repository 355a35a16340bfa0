"""An order: what was bought at which price, where it goes, the card that pays, and where
the next page of a listing of orders starts."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from orders.domain.checkout import Checkout, Reason, Status

PAGE_DEFAULT = 50
PAGE_MAX = 500
# Longer than any order id handed out (a UUID): a longer one in a cursor was never ours.
ORDER_ID_MAX = 64


class OrderNotFound(Exception):
    """Order not found."""


@dataclass(frozen=True, slots=True)
class Card:
    """A card as payments holds it: a token standing for the number, its brand and last four."""

    token: str
    brand: str
    last4: str


@dataclass(frozen=True, slots=True)
class Requested:
    """So many units of a SKU, as the customer asks for them."""

    sku: str
    quantity: int


@dataclass(frozen=True, slots=True)
class Line:
    sku: str
    name: str
    quantity: int
    unit_price: int

    @property
    def line_total(self) -> int:
        return self.unit_price * self.quantity


@dataclass(frozen=True, slots=True)
class Address:
    name: str
    line1: str
    city: str
    postal_code: str
    country: str
    line2: str | None = None


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    user_id: str
    status: Status
    reason: Reason | None
    lines: tuple[Line, ...]
    total: int
    currency: str
    shipping_address: Address
    card: Card
    idempotency_key: str
    fingerprint: str
    placed_at: datetime
    updated_at: datetime
    deadline_at: datetime
    checkout: Checkout
    trace_id: str | None = None
    traceparent: str | None = field(default=None, repr=False)

    def advanced(self, checkout: Checkout, now: datetime) -> Order:
        """This order with its checkout moved on, and its status following the checkout's."""
        status = checkout.status
        reason = checkout.reason if status is Status.CANCELLED else None
        return replace(self, checkout=checkout, status=status, reason=reason, updated_at=now)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page of orders starts: after this one (newest first; ties by id). The
    application hands it out as an opaque token (agora.cursor)."""

    placed_at: datetime
    id: str

    def __post_init__(self) -> None:
        if len(self.id) > ORDER_ID_MAX:
            raise ValueError("no order has this id")

    @classmethod
    def after(cls, order: Order) -> Cursor:
        return cls(order.placed_at, order.id)
