"""The gateway's typed settings: its own port and rate limits, plus the shared ``AGORA_*``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from agora.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    service_name: ClassVar[str] = "gateway"
    model_config = ServiceSettings.prefixed("AGORA_GATEWAY_")

    port: int = Field(default=8000, ge=0, le=65535)
    # Requests per second per client (its IP address), refilled continuously...
    rate_limit: float = Field(default=100.0, gt=0)
    # ...and how many a client may send at once after being idle.
    rate_burst: int = Field(default=200, ge=1)
    # Clients whose buckets are remembered; idle ones are forgotten first.
    rate_clients: int = Field(default=100_000, ge=1)
    # How long `GET /api` waits for a replica's /readyz before calling it not ready.
    health_timeout: float = Field(default=1.0, gt=0)
