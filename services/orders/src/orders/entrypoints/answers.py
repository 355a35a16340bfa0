"""Orders' message subscriptions: each answer from inventory and payments moves a checkout on."""

from __future__ import annotations

from sqlalchemy.orm import Session

from agora.errors import slug
from agora.messaging import CloudEvent, Subscription
from contracts.base import IntegrationEvent
from orders import application
from orders.application import ANSWERS, Clock, Orders, utc_now
from orders.domain import Rules


def subscriptions(orders: Orders, rules: Rules, clock: Clock = utc_now) -> tuple[Subscription, ...]:
    """One subscription per answer from inventory and payments, each moving the checkout on.

    A function rather than a constant: the saga's timing comes from the settings. It takes the
    parts it uses rather than :class:`application.Parts`, which bootstrap completes only once the
    app exists (its clients of other services use the app's), after the app took these.
    """

    def checkout_answer(session: Session, event: IntegrationEvent, envelope: CloudEvent) -> None:
        application.answer(session, orders, rules, event, clock())

    return tuple(
        Subscription(answer, checkout_answer, name="on_" + slug(answer.__name__).replace("-", "_"))
        for answer in ANSWERS
    )
