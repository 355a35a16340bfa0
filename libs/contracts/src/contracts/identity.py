"""Integration events that identity publishes.

Each event is a pydantic model of the CloudEvents ``data`` member; its class-level ``type`` is the
CloudEvents ``type`` (``<publisher>.<Event>.v<N>``), as in the other contracts modules. A breaking
change means a new class with a new version, never an edit of a published one.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import Field

from contracts.base import IntegrationEvent


class UserRegistered(IntegrationEvent):
    """A customer account was created."""

    type: ClassVar[str] = "identity.UserRegistered.v1"

    user_id: str = Field(description="the new account's id (the `sub` of its access tokens)")
    email: str = Field(description="the account's email address, normalized to lower case")
    registered_at: datetime = Field(description="when the account was created (UTC)")


EVENTS: tuple[type[IntegrationEvent], ...] = (UserRegistered,)
