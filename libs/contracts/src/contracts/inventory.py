"""Inventory's contract: the commands it accepts from the checkout and the events it answers with.

Every message is about one order (its ``order_id`` is also the CloudEvents ``subject``). The
commands are idempotent per order: a command sent again (a saga step retried after its deadline)
gets the same answer again and changes nothing twice. A release that arrives before the
reservation it releases is remembered, so the late reservation is refused (``StockRejected``
with reason ``released``) rather than taking stock nobody will ever commit.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from contracts.base import IntegrationCommand, IntegrationEvent


class StockLine(BaseModel):
    """So many units of one SKU."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    sku: str
    quantity: int = Field(gt=0)


class Shortage(BaseModel):
    """A line that could not be reserved, with what was available when it was tried."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    sku: str
    requested: int
    available: int = Field(description="Units available then; 0 for a SKU inventory lacks.")


class ReserveStock(IntegrationCommand):
    """Hold every line of an order, all or none, until it is committed, released or expires."""

    type: ClassVar[str] = "inventory.ReserveStock.v1"

    order_id: str
    lines: tuple[StockLine, ...] = Field(min_length=1)


class ReleaseStock(IntegrationCommand):
    """Give back what the order holds (nothing when it holds nothing)."""

    type: ClassVar[str] = "inventory.ReleaseStock.v1"

    order_id: str


class CommitStock(IntegrationCommand):
    """Turn the order's reservation into a sale: the units leave the stock on hand."""

    type: ClassVar[str] = "inventory.CommitStock.v1"

    order_id: str


class StockReserved(IntegrationEvent):
    """Every line of the order is held until ``expires_at``."""

    type: ClassVar[str] = "inventory.StockReserved.v1"

    order_id: str
    lines: tuple[StockLine, ...]
    expires_at: datetime


class StockRejected(IntegrationEvent):
    """The order's stock could not be taken; nothing is held for it.

    ``reason``: ``out_of_stock`` (a line exceeds what is available; see ``shortages``),
    ``released`` (the order was released before this reservation came), or
    ``reservation_expired`` (a commit came after the reservation had expired and the units had
    gone to others meanwhile).
    """

    type: ClassVar[str] = "inventory.StockRejected.v1"

    order_id: str
    reason: str
    shortages: tuple[Shortage, ...] = ()


class StockReleased(IntegrationEvent):
    """Whatever the order held is available again.

    ``reason``: ``requested`` (a ReleaseStock) or ``expired`` (not committed in time).
    ``lines`` is empty when the order held nothing.
    """

    type: ClassVar[str] = "inventory.StockReleased.v1"

    order_id: str
    reason: str
    lines: tuple[StockLine, ...] = ()


class StockCommitted(IntegrationEvent):
    """The order's units are sold: they left the stock on hand."""

    type: ClassVar[str] = "inventory.StockCommitted.v1"

    order_id: str
    lines: tuple[StockLine, ...]


EVENTS: tuple[type[IntegrationEvent], ...] = (
    StockReserved,
    StockRejected,
    StockReleased,
    StockCommitted,
)
COMMANDS: tuple[type[IntegrationCommand], ...] = (ReserveStock, ReleaseStock, CommitStock)
