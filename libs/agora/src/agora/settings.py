"""Typed settings, read from the environment once, in a service's ``bootstrap``.

Each service subclasses :class:`ServiceSettings` with its own prefix (``AGORA_CATALOG_``) for what
is its own (port, database URL). What the whole system shares (profile, where the other services
are, token issuer and audience) is read from un-prefixed ``AGORA_*`` names, set once by the runner
or the deployment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agora.forwarded import TrustedProxies
from agora.messaging.credentials import NatsCredentials

Profile = Literal["embedded", "production"]


def _shared(name: str) -> Any:
    """A field read from the shared, un-prefixed variable ``AGORA_<NAME>``."""
    return AliasChoices(f"AGORA_{name.upper()}", name)


class ServiceSettings(BaseSettings):
    """What every Agora process needs to know. Subclass it per service and set ``service_name``."""

    model_config = SettingsConfigDict(env_prefix="AGORA_", extra="ignore", populate_by_name=True)

    service_name: ClassVar[str] = "service"

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    database_url: str = ""

    profile: Profile = Field(default="embedded", validation_alias=_shared("profile"))
    data_dir: Path = Field(default=Path(".agora/data"), validation_alias=_shared("data_dir"))
    replica: int = Field(default=0, ge=0, validation_alias=_shared("replica"))
    version: str = Field(default="0.1.0", validation_alias=_shared("version"))
    log_level: str = Field(default="info", validation_alias=_shared("log_level"))
    log_format: Literal["json", "console"] = Field(
        default="json", validation_alias=_shared("log_format")
    )
    # Where the other services are: {"identity": ["http://127.0.0.1:8101", ...]}.
    service_urls: dict[str, list[str]] = Field(
        default_factory=dict, validation_alias=_shared("service_urls")
    )
    jwt_issuer: str = Field(default="agora-identity", validation_alias=_shared("jwt_issuer"))
    jwt_audience: str = Field(default="agora", validation_alias=_shared("jwt_audience"))
    # SQLite: NORMAL keeps the database consistent but may lose the last commits on power loss;
    # FULL syncs every commit.
    sqlite_synchronous: Literal["NORMAL", "FULL"] = Field(
        default="NORMAL", validation_alias=_shared("sqlite_synchronous")
    )
    max_body_bytes: int = Field(default=1024 * 1024, validation_alias=_shared("max_body_bytes"))
    # The request line and headers of one request, together (agora.server): past it, 431. Room
    # for a session cookie, a token and a browser's usual headers, with the cookies other local
    # apps leave on 127.0.0.1 besides.
    max_header_bytes: int = Field(
        default=32 * 1024, ge=1024, validation_alias=_shared("max_header_bytes")
    )
    client_timeout: float = Field(default=5.0, gt=0, validation_alias=_shared("client_timeout"))
    # The proxies whose X-Forwarded-For and X-Forwarded-Proto this process believes, comma
    # separated addresses or networks (agora.forwarded). A service is called by the gateway and
    # its peers, on loopback when embedded; the gateway itself trusts none unless told.
    trusted_proxies: str = "127.0.0.1,::1"

    # Credentials (agora.auth, ADR 24). The operator's token opens /internal/*: given as it is
    # (AGORA_OPERATOR_TOKEN) or as a file holding it (AGORA_OPERATOR_TOKEN_FILE, what agora up
    # passes); embedded, `<data_dir>/../secrets/operator.token` is read when neither is set.
    operator_token: str = Field(default="", repr=False, validation_alias=_shared("operator_token"))
    operator_token_file: Path | None = Field(
        default=None, validation_alias=_shared("operator_token_file")
    )
    # This process's own credential, sent on the calls it makes on nobody's behalf...
    service_token: str = Field(default="", repr=False, validation_alias=_shared("service_token"))
    service_token_file: Path | None = Field(
        default=None, validation_alias=_shared("service_token_file")
    )
    # ...and the services that may call it so: {"orders": "<sha256 hex of its token>"}.
    service_callers: dict[str, str] = Field(
        default_factory=dict, validation_alias=_shared("service_callers")
    )

    # Messaging. No URL: the service runs without a broker (its outbox still fills).
    nats_url: str = Field(default="", validation_alias=_shared("nats_url"))
    # This process's broker user (agora.messaging.credentials, ADR 25): its password given as it
    # is or as a file holding it (what agora up passes). No user: it connects without one.
    nats_user: str = Field(default="", validation_alias=_shared("nats_user"))
    nats_password: str = Field(default="", repr=False, validation_alias=_shared("nats_password"))
    nats_password_file: Path | None = Field(
        default=None, validation_alias=_shared("nats_password_file")
    )
    # How long a consumer may hold a message before the broker redelivers it; after a replica
    # dies, its messages wait this long, so it bounds recovery time.
    ack_wait: float = Field(default=30.0, gt=0, validation_alias=_shared("ack_wait"))
    # Deliveries before a message is dead-lettered.
    max_deliver: int = Field(default=5, ge=1, validation_alias=_shared("max_deliver"))
    # Pause before each redelivery after a handler failed (seconds; the last repeats).
    redelivery_backoff: list[float] = Field(
        default_factory=lambda: [0.5, 2.0, 5.0, 10.0],
        validation_alias=_shared("redelivery_backoff"),
    )
    relay_batch: int = Field(default=500, ge=1, le=10_000, validation_alias=_shared("relay_batch"))
    # When a pass of the relay took at least relay_linger_after rows, it waits relay_linger
    # seconds before the next, so that the next batch is fuller (ADR 60); 0 never waits. With
    # both defaults it keeps waiting only while events are committed faster than about 1,600 a
    # second.
    relay_linger: float = Field(default=0.005, ge=0, le=1, validation_alias=_shared("relay_linger"))
    relay_linger_after: int = Field(
        default=8, ge=1, le=10_000, validation_alias=_shared("relay_linger_after")
    )
    # Each database statement and Redis command a span under the request's or message's, for
    # the console's trace view (ADR 41): off, as it costs 50-95 µs of CPU a statement, about 10 %
    # of a read's CPU. `agora up --trace-statements` turns it on for every process.
    trace_statements: bool = Field(default=False, validation_alias=_shared("trace_statements"))
    # A stop (SIGTERM) ends within this many seconds, whatever is still running (ADR 30).
    stop_timeout: float = Field(default=20.0, gt=0, validation_alias=_shared("stop_timeout"))
    # How long a stopping process keeps serving after /readyz turned 503: callers and load
    # balancers learn of it only at their next poll, and go on sending until then (ADR 30).
    stop_drain: float = Field(default=1.0, ge=0, validation_alias=_shared("stop_drain"))
    # Whether the app brings its database up to date as it starts (ADR 50): off where the
    # migrations ran before the processes started (`agora up` runs them once for every replica),
    # so a start neither migrates twice nor imports Alembic.
    migrate_on_start: bool = Field(default=True, validation_alias=_shared("migrate_on_start"))

    @field_validator("trace_statements", mode="before")
    @classmethod
    def _unset_is_off(cls, value: object) -> object:
        # AGORA_TRACE_STATEMENTS= (set, but to nothing) means off, as an unset variable does.
        return False if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _default_database(self) -> ServiceSettings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / f'{self.service_name}.db'}"
        return self

    @property
    def nats_credentials(self) -> NatsCredentials | None:
        """The broker user this process logs in as; None to connect without one."""
        return NatsCredentials.of(self.nats_user, self.nats_password, self.nats_password_file)

    @property
    def proxies(self) -> TrustedProxies:
        return TrustedProxies(self.trusted_proxies.split(","))

    @classmethod
    def prefixed(cls, prefix: str) -> SettingsConfigDict:
        """The model config of a service's settings class: its own prefix, the shared rules."""
        return SettingsConfigDict(env_prefix=prefix, extra="ignore", populate_by_name=True)
