"""An order in the contracts' words: the events orders records about it, made in one place so
that OrderPlaced and each version of OrderConfirmed tell the same order the same way."""

from __future__ import annotations

from contracts.orders import (
    OrderCancelled,
    OrderConfirmed,
    OrderConfirmedV2,
    OrderLine,
    OrderPlaced,
    ShippingAddress,
)
from orders.domain import Order


def order_placed(order: Order) -> OrderPlaced:
    return OrderPlaced(
        order_id=order.id,
        user_id=order.user_id,
        lines=_lines(order),
        total=order.total,
        currency=order.currency,
        placed_at=order.placed_at,
    )


def order_confirmed(order: Order) -> tuple[OrderConfirmed, OrderConfirmedV2]:
    """The order's confirmation in every version still published: v1 while a service consumes
    it, v2 with what a shipment needs (docs/adr/0038-two-versions-of-an-event-side-by-side.md)."""
    address = order.shipping_address
    return (
        OrderConfirmed(
            order_id=order.id, user_id=order.user_id, total=order.total, currency=order.currency
        ),
        OrderConfirmedV2(
            order_id=order.id,
            user_id=order.user_id,
            lines=_lines(order),
            total=order.total,
            currency=order.currency,
            shipping_address=ShippingAddress(
                name=address.name,
                line1=address.line1,
                line2=address.line2,
                city=address.city,
                postal_code=address.postal_code,
                country=address.country,
            ),
        ),
    )


def order_cancelled(order: Order) -> OrderCancelled:
    assert order.reason is not None, "a cancelled order says why"
    return OrderCancelled(order_id=order.id, user_id=order.user_id, reason=order.reason.value)


def _lines(order: Order) -> tuple[OrderLine, ...]:
    return tuple(
        OrderLine(sku=x.sku, name=x.name, quantity=x.quantity, unit_price=x.unit_price)
        for x in order.lines
    )
