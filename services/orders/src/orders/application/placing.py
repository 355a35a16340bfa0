"""Placing an order. It calls three other services first (the cart for its lines when the order
has none, the catalog for prices, payments for a card token) and only then opens its one
transaction: no transaction waits on the network."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import structlog
from opentelemetry import propagate, trace
from sqlalchemy import Connection

from agora.db import UnitOfWork
from agora.messaging.outbox import record
from orders.application.checkout import send
from orders.application.events import order_placed
from orders.application.ports import DuplicateOrder, Orders, Parts
from orders.domain import (
    Address,
    Checkout,
    CheckoutsBusy,
    Commands,
    IdempotencyKeyReused,
    Order,
    Requested,
    Status,
    card_digits,
    fingerprint,
    from_cart,
    price,
)

log = structlog.get_logger("orders")


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    user_id: str
    idempotency_key: str
    # None: the order is for what the user's cart holds.
    lines: tuple[Requested, ...] | None
    shipping_address: Address
    # As the customer typed it; it goes to payments for a token and is then forgotten.
    card_number: str


@dataclass(frozen=True, slots=True)
class Placed:
    order: Order
    # The Idempotency-Key had placed this order before: nothing new happened.
    replayed: bool


async def place_order(uow: UnitOfWork, parts: Parts, command: PlaceOrder) -> Placed:
    """Place the order unless its Idempotency-Key placed one already, then answer with that one.

    The cart's lines (for a command without lines), prices and the card token are fetched before
    the transaction. Of two placements with one key racing each other, the unique (user, key)
    lets one insert; the other reads the winner's order. The cart itself is emptied by cart
    when it hears of OrderPlaced, not here: an order placed is not undone by a cart that fails.
    """
    digits = card_digits(command.card_number)
    body = fingerprint(command.lines, command.shipping_address, digits)
    # A replay needs neither the catalogue nor payments: answer it before calling them, even
    # when no new checkout is admitted.
    limit = parts.rules.max_in_flight
    earlier, in_flight = await uow.query(
        before_placing, parts.orders, command.user_id, command.idempotency_key, limit
    )
    if earlier is not None:
        return _replay(earlier, body)
    if in_flight >= limit:
        raise CheckoutsBusy(parts.rules.busy_retry_after)
    requested = command.lines
    if requested is None:
        requested = from_cart(await parts.cart.lines())
    prices = await parts.catalog.prices([line.sku for line in requested])
    lines, total, currency = price(requested, prices)
    card = await parts.payments.tokenize(digits)
    now = parts.clock()
    checkout, commands = Checkout.begin(parts.rules, now)
    trace_id, traceparent = _current_trace()
    order = Order(
        id=str(uuid.uuid4()),
        user_id=command.user_id,
        status=Status.PENDING,
        reason=None,
        lines=lines,
        total=total,
        currency=currency,
        shipping_address=command.shipping_address,
        card=card,
        idempotency_key=command.idempotency_key,
        fingerprint=body,
        placed_at=now,
        updated_at=now,
        deadline_at=now + parts.rules.saga_deadline,
        checkout=checkout,
        trace_id=trace_id,
        traceparent=traceparent,
    )
    try:
        placed = await uow.run(record_order, parts.orders, order, commands)
    except DuplicateOrder:
        winner = await uow.query(
            find_by_key, parts.orders, command.user_id, command.idempotency_key
        )
        if winner is None:  # the winner's row is committed before our insert fails
            raise
        return _replay(winner, body)
    if not placed.replayed:
        log.info("order placed", order_id=order.id, total=order.total, currency=order.currency)
    return placed


def record_order(
    connection: Connection, orders: Orders, order: Order, commands: Commands
) -> Placed:
    """The placement's one transaction: the order, its checkout, OrderPlaced and the first
    command. :class:`DuplicateOrder` when a request with the same key placed an order since
    ``place_order`` looked: the unique (user, key) refuses the insert, so no second look is
    needed here."""
    orders.add(connection, order)
    record(connection, order_placed(order), aggregate=order.id)
    send(connection, order, commands)
    return Placed(order, replayed=False)


def find_by_key(connection: Connection, orders: Orders, user_id: str, key: str) -> Order | None:
    return orders.by_key(connection, user_id, key)


def before_placing(
    connection: Connection, orders: Orders, user_id: str, key: str, at_most: int
) -> tuple[Order | None, int]:
    """The order an earlier request with this key placed, if any, and how many checkouts are
    under way (counted up to ``at_most``), in one read."""
    return orders.by_key(connection, user_id, key), orders.in_flight(connection, at_most)


def _replay(order: Order, body: str) -> Placed:
    if order.fingerprint != body:
        raise IdempotencyKeyReused(
            "this Idempotency-Key placed an order with another body: use a new key for a new order"
        )
    return Placed(order, replayed=True)


def _current_trace() -> tuple[str | None, str | None]:
    """The trace id and the ``traceparent`` of the span the checkout begins in."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return format(context.trace_id, "032x"), carrier.get("traceparent")
