"""Integration events orders publishes about an order's life.

An order is placed PENDING (``OrderPlaced``) and ends once, CONFIRMED or CANCELLED. The checkout's
commands to inventory and payments are those services' contracts, not these.

OrderConfirmed has two versions, published side by side for each confirmed order: v1 (the order
and its total) and v2, which adds what a shipment needs, the lines and the shipping address. v1
stays while a service consumes it (docs/adr/0038-two-versions-of-an-event-side-by-side.md).
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


class ShippingAddress(BaseModel):
    """Where the order goes, as the customer gave it when placing it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    line1: str
    line2: str | None = None
    city: str
    postal_code: str
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2, upper case.")


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


class OrderConfirmedV2(IntegrationEvent):
    """The order is paid and its stock committed: ship its lines to its shipping address.

    Version 2 of OrderConfirmed: the v1 fields, the order's lines and where it goes. orders
    publishes both versions of every confirmation.
    """

    type: ClassVar[str] = "orders.OrderConfirmed.v2"

    order_id: str
    user_id: str
    lines: tuple[OrderLine, ...] = Field(min_length=1)
    total: int = Field(description="Minor units of `currency`.")
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    shipping_address: ShippingAddress


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


EVENTS: tuple[type[IntegrationEvent], ...] = (
    OrderPlaced,
    OrderConfirmed,
    OrderConfirmedV2,
    OrderCancelled,
)
