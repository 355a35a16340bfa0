"""Orders' message subscriptions: each answer from inventory and payments moves a checkout on."""

from __future__ import annotations

from sqlalchemy import Connection

from agora.errors import slug
from agora.messaging import CloudEvent, Subscription
from contracts.base import IntegrationEvent
from orders import application
from orders.application import ANSWERS


def subscriptions(parts: application.Parts) -> tuple[Subscription, ...]:
    """One subscription per answer from inventory and payments, each moving the checkout on
    with the parts bootstrap chose (the saga's timing, from the settings, is in their rules)."""

    def checkout_answer(
        connection: Connection, event: IntegrationEvent, envelope: CloudEvent
    ) -> None:
        application.answer(connection, parts.orders, parts.rules, event, parts.clock())

    return tuple(
        Subscription(answer, checkout_answer, name="on_" + slug(answer.__name__).replace("-", "_"))
        for answer in ANSWERS
    )
