"""The gateway's typed settings: its own port, rate limits and their Redis, plus the shared
``AGORA_*``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from agora.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    service_name: ClassVar[str] = "gateway"
    model_config = ServiceSettings.prefixed("AGORA_GATEWAY_")

    port: int = Field(default=8000, ge=0, le=65535)
    # Requests per second per user or anonymous client, refilled continuously...
    rate_limit: float = Field(default=100.0, gt=0)
    # ...and how many a client may send at once after being idle.
    rate_burst: int = Field(default=200, ge=1)
    # Clients whose buckets are remembered; idle ones are forgotten first.
    rate_clients: int = Field(default=100_000, ge=1)
    # A user's requests count against the user (the subject of a token that verifies), an
    # anonymous one's against the client's address; logins and registrations, each an argon2id
    # hash at identity, also against tighter buckets per address: this many attempts at once,
    # then this many a minute (`AGORA_GATEWAY_LOGIN_RATE_LIMIT`, `..._REGISTER_RATE_LIMIT`).
    login_rate_limit: float = Field(default=10, gt=0)
    register_rate_limit: float = Field(default=10, gt=0)
    # The proxies in front of the gateway whose X-Forwarded-For and X-Forwarded-Proto name the
    # client (`AGORA_GATEWAY_TRUSTED_PROXIES`, addresses or networks): none by default, the
    # gateway being the public door. What they say is passed on to the services (ADR 21).
    trusted_proxies: str = ""
    # A Redis to keep the buckets in, shared by every gateway replica (`redis://host:6379/0`).
    # Empty: each gateway process counts on its own (enough for one replica). While it is away,
    # each process counts on its own too.
    redis_url: str = ""
    # The start of every key the gateway writes there (`<prefix>bucket:<key>`).
    redis_prefix: str = "agora:gateway:"
    # How long `GET /api` waits for a replica's /readyz before calling it not ready.
    health_timeout: float = Field(default=1.0, gt=0)
    # The key that signs the pages' CSRF tokens (`AGORA_GATEWAY_SESSION_SECRET`). Empty: a random
    # one per process, which is enough for one gateway; several gateway replicas need one set,
    # the same for all, or a form rendered by one replica is refused by another.
    session_secret: str = Field(default="", repr=False)
    # Products per page on the storefront.
    storefront_page_size: int = Field(default=24, ge=1, le=100)
    # How long a storefront session lasts from logging in, in seconds, whatever the lifetime of
    # the token it holds (`AGORA_GATEWAY_SESSION_LIFETIME`): then the pages ask to log in again,
    # and the gateway refuses that token from then on (ADR 22).
    session_lifetime: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    # Strict-Transport-Security's max-age, sent on answers to requests that came over https.
    hsts_max_age: int = Field(default=365 * 24 * 3600, ge=0)
    # A Prometheus server scraping the system, which the console links to
    # (`AGORA_GATEWAY_PROMETHEUS_URL`; `agora up --prometheus` sets it). Empty: no link.
    prometheus_url: str = ""
