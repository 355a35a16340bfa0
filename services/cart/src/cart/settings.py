"""The cart service's settings: its own read ``AGORA_CART_*``, the shared ones ``AGORA_*``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from agora.settings import ServiceSettings


class CartSettings(ServiceSettings):
    service_name: ClassVar[str] = "cart"
    model_config = ServiceSettings.prefixed("AGORA_CART_")

    # Set (`redis://host:6379/0`): the carts' lines live in Redis, and its reachability is part
    # of readiness. Unset: they live in the service's database. The database is there either
    # way: it keeps the inbox of the events the cart consumes.
    redis_url: str = ""
    # Every key the cart writes starts with it, so several systems (or tests) can share a Redis.
    redis_prefix: str = "agora:"
    # Seconds a Redis command may take before the request is a 503.
    redis_timeout: float = Field(default=0.5, gt=0)
    # The currency an empty cart is shown in; a cart with lines takes the catalogue's.
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
