"""A service's subscriptions: one table, event type -> handler (as a nameko service lists its
entrypoints). A handler is a plain function over the connection, like every other handler: it turns
the event into the service's own change, in the transaction that also records the event id in
the inbox.

    SUBSCRIPTIONS = (
        Subscription(ProductCreated, open_stock),
    )

    def open_stock(connection: Connection, event: ProductCreated, envelope: CloudEvent) -> None: ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection

from agora.messaging.envelope import CloudEvent, EventType, subject_of

Handler = Callable[[Connection, Any, CloudEvent], None]


@dataclass(frozen=True, slots=True)
class Subscription:
    """Deliver events of ``event``'s type to ``handler``, once each, in a transaction."""

    event: type[BaseModel]
    handler: Handler
    name: str = ""

    @property
    def event_type(self) -> EventType:
        return EventType(getattr(self.event, "type"))  # noqa: B009 (a ClassVar on the model)

    @property
    def durable(self) -> str:
        """The consumer's durable name part (JetStream names take no dots)."""
        return self.name or self.handler.__name__

    @property
    def subject(self) -> str:
        return subject_of(self.event)
