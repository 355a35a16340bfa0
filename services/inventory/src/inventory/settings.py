"""Inventory's settings: its own read ``AGORA_INVENTORY_*``, the shared ones ``AGORA_*``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from agora.settings import ServiceSettings


class InventorySettings(ServiceSettings):
    service_name: ClassVar[str] = "inventory"
    model_config = ServiceSettings.prefixed("AGORA_INVENTORY_")

    # Give the seed catalogue's SKUs their opening stock (seed.json) at start-up; a SKU that
    # has an opening quantity keeps it.
    seed: bool = True
    # Seconds a reservation holds its units before it expires and they are available again.
    reservation_ttl: float = Field(default=900.0, gt=0)
    # Seconds between two looks for expired reservations.
    expiry_interval: float = Field(default=1.0, gt=0)
    # Reservations expired in one transaction at most; more wait for the next round at once.
    expiry_batch: int = Field(default=100, ge=1, le=10_000)
