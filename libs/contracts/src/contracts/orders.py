"""Integration events orders publishes about an order's life.

An order is placed PENDING (``OrderPlaced``) and ends once, CONFIRMED or CANCELLED. The checkout's
commands to inventory and payments are those services' contracts, not these.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from contracts.base import IntegrationEvent


class OrderLine(BaseModel):
    """One line of an order, priced from the catalogue at checkout."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    sku: str
    name: str
    quantity: int = Field(gt=0)
    unit_price: int = Field(gt=0, description="Minor units of the order's currency.")


class OrderPlaced(IntegrationEvent):
    """A customer placed an order; its checkout has begun."""

    type: ClassVar[str] = "orders.OrderPlaced.v1"

    order_id: str
    user_id: str
    lines: tuple[OrderLine, ...]
    total: int = Field(description="Minor units of `currency`.")
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    placed_at: datetime


class OrderConfirmed(IntegrationEvent):
    """The order is paid and its stock committed: it will be shipped."""

    type: ClassVar[str] = "orders.OrderConfirmed.v1"

    order_id: str
    user_id: str
    total: int
    currency: str


class OrderCancelled(IntegrationEvent):
    """The order ended without a sale; whatever the checkout had taken was given back.

    ``reason``: ``out_of_stock``, ``payment_declined``, ``payment_failed`` (the processor kept
    failing), ``customer_cancelled``, ``stock_timeout`` or ``payment_timeout`` (a step's answer
    never came before its deadline), ``reservation_expired`` (paid after the reservation
    expired and the stock was gone: refunded).
    """

    type: ClassVar[str] = "orders.OrderCancelled.v1"

    order_id: str
    user_id: str
    reason: str


EVENTS: tuple[type[IntegrationEvent], ...] = (OrderPlaced, OrderConfirmed, OrderCancelled)
