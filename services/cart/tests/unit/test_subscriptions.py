"""What the cart listens to, as the broker sees it: one durable consumer, on orders' events."""

from __future__ import annotations

from cart.adapters import SqlCarts
from cart.entrypoints import subscriptions


def test_the_cart_consumes_the_orders_placed() -> None:
    found = subscriptions(SqlCarts())

    assert {s.durable: s.subject for s in found} == {
        "remove_ordered": "agora.orders.events.OrderPlaced.v1",
    }
