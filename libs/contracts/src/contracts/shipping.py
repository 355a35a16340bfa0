"""Integration events shipping publishes about a shipment's way to the customer.

Shipping makes one shipment for each confirmed order (from ``orders.OrderConfirmed.v2``, which
carries the address), with a carrier and a service level chosen by the destination country, and
follows it: its label created (``ShipmentCreated``), collected by the carrier
(``ShipmentDispatched``), handed to the customer (``ShipmentDelivered``). Each step is published
once; ``shipment_id`` is also the CloudEvents ``subject``.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import Field

from contracts.base import IntegrationEvent


class ShipmentEvent(IntegrationEvent):
    """What every step of a shipment says: which shipment, of whose order, and how it travels."""

    shipment_id: str
    order_id: str
    user_id: str = Field(description="The customer who placed the order.")
    carrier: str = Field(description="Who carries it, as shipping names them.")
    service_level: str = Field(description="How fast the carrier carries it.")
    tracking_number: str = Field(description="The carrier's number for following the parcel.")


class ShipmentCreated(ShipmentEvent):
    """A confirmed order has its shipment: the label is made and the parcel awaits the carrier."""

    type: ClassVar[str] = "shipping.ShipmentCreated.v1"

    destination_country: str = Field(
        pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2, upper case."
    )
    created_at: datetime


class ShipmentDispatched(ShipmentEvent):
    """The carrier collected the parcel: the order is on its way."""

    type: ClassVar[str] = "shipping.ShipmentDispatched.v1"

    dispatched_at: datetime


class ShipmentDelivered(ShipmentEvent):
    """The carrier handed the parcel over at its destination."""

    type: ClassVar[str] = "shipping.ShipmentDelivered.v1"

    delivered_at: datetime


EVENTS: tuple[type[IntegrationEvent], ...] = (
    ShipmentCreated,
    ShipmentDispatched,
    ShipmentDelivered,
)
