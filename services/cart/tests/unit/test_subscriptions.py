"""What the cart listens to, as the broker sees it: one durable consumer, on orders' events."""

from __future__ import annotations

from unittest.mock import Mock

from cart.adapters import SqlCarts
from cart.application import CatalogService, Parts
from cart.entrypoints import subscriptions


def test_the_cart_consumes_the_orders_placed() -> None:
    found = subscriptions(Parts(SqlCarts(), Mock(spec_set=CatalogService), currency="EUR"))

    assert {s.durable: s.subject for s in found} == {
        "remove_ordered": "agora.orders.events.OrderPlaced.v1",
    }
