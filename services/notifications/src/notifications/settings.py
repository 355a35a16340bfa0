"""Notifications' settings: its own read ``AGORA_NOTIFICATIONS_*``, the shared ones ``AGORA_*``."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, SecretStr, field_validator

from agora.settings import ServiceSettings


class NotificationsSettings(ServiceSettings):
    service_name: ClassVar[str] = "notifications"
    model_config = ServiceSettings.prefixed("AGORA_NOTIFICATIONS_")

    # The mail server. Unset: messages are only stored in the mailboxes, and no mail is sent
    # (the messages stay pending, and go out once a server is configured).
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    # The From of every mail; its domain is also the right-hand side of the Message-IDs.
    smtp_from: str = Field(default="Agora <no-reply@localhost>", min_length=3)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    # Upgrade the connection with STARTTLS before sending (and fail if the server cannot).
    smtp_starttls: bool = False
    # Seconds one mail may take to hand over; past it the send counts as failed.
    smtp_timeout: float = Field(default=10.0, gt=0)
    # A sender holds a message for smtp_timeout plus this margin (seconds); one that died
    # holding it is replaced once the lease runs out, and the message is sent again.
    lease_margin: float = Field(default=5.0, gt=0)
    # How often the sender looks for messages to send when no commit woke it (seconds).
    sender_poll: float = Field(default=1.0, gt=0)
    # Messages one round of the sender takes (and sends concurrently).
    sender_batch: int = Field(default=20, ge=1, le=1000)

    @field_validator("smtp_host", "smtp_username", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def mail_configured(self) -> bool:
        return self.smtp_host is not None
