"""An order in the contracts' words: the events orders records about it, made in one place so
that OrderPlaced and each version of OrderConfirmed tell the same order the same way.

A line and the shipping address are read off the order's own by the contract's fields
(``from_attributes``): the contract says what it carries, and is not copied out field by field."""

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
            shipping_address=ShippingAddress.model_validate(
                order.shipping_address, from_attributes=True
            ),
        ),
    )


def order_cancelled(order: Order) -> OrderCancelled:
    assert order.reason is not None, "a cancelled order says why"
    return OrderCancelled(order_id=order.id, user_id=order.user_id, reason=order.reason.value)


def _lines(order: Order) -> tuple[OrderLine, ...]:
    return tuple(OrderLine.model_validate(line, from_attributes=True) for line in order.lines)
