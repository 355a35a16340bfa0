"""What notifications listens to, as the broker sees it: one durable consumer per subscription,
on identity's, orders' and shipping's event subjects."""

from __future__ import annotations

from notifications.adapters import JinjaTemplates, SqlMessages
from notifications.application import Parts
from notifications.entrypoints import subscriptions


def _nothing() -> None:
    """No sender to wake."""


def test_notifications_consumes_new_users_ended_orders_and_dispatched_shipments() -> None:
    found = subscriptions(Parts(SqlMessages(), JinjaTemplates(), _nothing))

    assert {s.durable: s.subject for s in found} == {
        "welcome_user": "agora.identity.events.UserRegistered.v1",
        "tell_order_confirmed": "agora.orders.events.OrderConfirmed.v1",
        "tell_order_cancelled": "agora.orders.events.OrderCancelled.v1",
        "tell_shipment_dispatched": "agora.shipping.events.ShipmentDispatched.v1",
    }
