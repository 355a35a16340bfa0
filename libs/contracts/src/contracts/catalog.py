"""Integration events the catalog publishes.

Each event carries the whole product as it stands after the change, so a consumer (inventory
opening stock for a new SKU, a search index, a storefront cache) never has to call back to learn
what changed. ``type`` names the event in the CloudEvents envelope; the ``v1`` suffix changes only
with a breaking change to the payload.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import Field

from contracts.base import IntegrationEvent


class _ProductState(IntegrationEvent):
    sku: str = Field(description="The product's stock-keeping unit, its identity.")
    name: str
    description: str
    price: int = Field(gt=0, description="Price in minor units of `currency` (cents for EUR).")
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code.")
    category: str = Field(description="Slug of the product's category.")
    image_url: str | None = None
    active: bool = Field(description="Whether the product is offered; inactive ones are hidden.")
    created_at: datetime
    updated_at: datetime


class ProductCreated(_ProductState):
    """A product was added to the catalogue (it starts active)."""

    type: ClassVar[str] = "catalog.ProductCreated.v1"


class ProductUpdated(_ProductState):
    """A product's details, price or availability changed; ``changed`` names the fields."""

    type: ClassVar[str] = "catalog.ProductUpdated.v1"

    changed: tuple[str, ...] = Field(description="The fields whose values changed.")


EVENTS: tuple[type[IntegrationEvent], ...] = (ProductCreated, ProductUpdated)
