"""Moving an order's checkout on: by an answer from inventory or payments, by a deadline that
passed, or by the customer cancelling. Each is one transaction that stores the checkout's new
state and records the commands it sends (and OrderConfirmed, in each version, or OrderCancelled
at its end) in the outbox; the deadline timer runs one such transaction per order that is due,
then sets the gauge of the oldest order still PENDING (ADR 34's AgoraOrderPendingTooLong)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from datetime import datetime

import structlog
from opentelemetry import propagate, trace
from opentelemetry.trace import Span
from prometheus_client import Gauge
from sqlalchemy import Connection

from agora.db import UnitOfWork
from agora.messaging.outbox import record
from contracts import inventory, payments
from contracts.base import IntegrationCommand, IntegrationEvent
from orders.application.events import order_cancelled, order_confirmed
from orders.application.ports import Due, Orders, Parts, Viewer
from orders.application.reading import visible
from orders.domain import Checkout, Command, Commands, Order, Rules, Status

log = structlog.get_logger("orders")
tracer = trace.get_tracer("orders.checkout")

# The answers from inventory and payments the checkout listens to.
ANSWERS: tuple[type[IntegrationEvent], ...] = (*inventory.EVENTS, *payments.EVENTS)
TIMER_BATCH = 100
PENDING_SINCE = Gauge(
    "agora_orders_oldest_pending_timestamp_seconds",
    "When the oldest order still PENDING was placed, at the deadline timer's last look; the time "
    "of that look when none is.",
)


def cancel_order(
    connection: Connection,
    orders: Orders,
    rules: Rules,
    order_id: str,
    viewer: Viewer,
    now: datetime,
) -> Order:
    """Cancel an order not yet charged: what the checkout took is given back, and the order is
    CANCELLED once inventory and payments acknowledged it. :class:`OrderCharged` after the pivot."""
    order = visible(orders.get(connection, order_id, lock=True), order_id, viewer)
    checkout, commands = order.checkout.cancel(rules, now)
    return advance(connection, orders, order, checkout, commands, now)


def answer(
    connection: Connection, orders: Orders, rules: Rules, event: IntegrationEvent, now: datetime
) -> None:
    """Move the order's checkout on by an answer from inventory or payments."""
    order_id: str = getattr(event, "order_id")  # noqa: B009 (every answer names its order)
    order = orders.get(connection, order_id, lock=True)
    if order is None:
        log.warning("answer for an unknown order", order_id=order_id, answer=event.type)
        return
    checkout, commands = _react(order.checkout, event, rules, now)
    advance(connection, orders, order, checkout, commands, now)


def _react(
    checkout: Checkout, event: IntegrationEvent, rules: Rules, now: datetime
) -> tuple[Checkout, Commands]:
    match event:
        case inventory.StockReserved():
            return checkout.stock_reserved(rules, now)
        case inventory.StockRejected():
            return checkout.stock_rejected(event.reason, rules, now)
        case inventory.StockReleased():
            return checkout.stock_released(rules, now)
        case inventory.StockCommitted():
            return checkout.stock_committed(rules, now)
        case payments.PaymentAuthorized():
            return checkout.payment_authorized(rules, now)
        case payments.PaymentDeclined():
            return checkout.payment_declined(event.reason, rules, now)
        case payments.PaymentFailed():
            return checkout.payment_failed(rules, now)
        case payments.PaymentCaptured():
            return checkout.payment_captured(rules, now)
        case payments.PaymentVoided():
            return checkout.payment_voided(rules, now)
        case payments.PaymentRefunded():
            return checkout.payment_refunded(rules, now)
    raise TypeError(f"the checkout does not listen to {event.type}")


def due_checkouts(connection: Connection, orders: Orders, now: datetime, limit: int) -> list[Due]:
    return orders.due(connection, now, limit)


def oldest_pending(connection: Connection, orders: Orders) -> datetime | None:
    return orders.oldest_pending(connection)


def fire_deadline(
    connection: Connection, orders: Orders, rules: Rules, order_id: str, now: datetime
) -> Order | None:
    """Act on one checkout's passed deadline, unless another replica holds it or acted already."""
    order = orders.get(connection, order_id, lock=True, skip_locked=True)
    if order is None:
        return None
    checkout, commands = order.checkout.deadline(rules, now)
    return advance(connection, orders, order, checkout, commands, now)


async def run_due(uow: UnitOfWork, parts: Parts, now: datetime, *, batch: int = TIMER_BATCH) -> int:
    """One tick of the deadline timer: act on up to ``batch`` checkouts whose deadline is at or
    before ``now``, each in a transaction of its own, then note when the oldest order still
    PENDING was placed (``now`` when none is). Returns how many were due."""
    due = await uow.query(due_checkouts, parts.orders, now, batch)
    for item in due:
        # A resend belongs to the checkout's trace, not to a trace of the timer's own.
        with _checkout_span(item, "checkout deadline"):
            try:
                await uow.run(fire_deadline, parts.orders, parts.rules, item.order_id, now)
            except Exception:
                # One order's failure must not hold up the others; it is due again next tick.
                log.exception("checkout deadline failed", order_id=item.order_id)
    # Set from the timer's own look, so `time() - gauge` grows as well when the timer stops.
    oldest = await uow.query(oldest_pending, parts.orders)
    PENDING_SINCE.set((oldest or now).timestamp())
    return len(due)


def _checkout_span(item: Due, name: str) -> AbstractContextManager[Span | None]:
    if item.traceparent is None:
        return nullcontext()
    parent = propagate.extract({"traceparent": item.traceparent})
    return tracer.start_as_current_span(
        name, context=parent, attributes={"agora.order_id": item.order_id}
    )


def advance(
    connection: Connection,
    orders: Orders,
    order: Order,
    checkout: Checkout,
    commands: Commands,
    now: datetime,
) -> Order:
    """Store the checkout's new state, send its commands, and announce the order's end."""
    if checkout == order.checkout and not commands:
        return order
    moved = order.advanced(checkout, now)
    orders.save(connection, moved)
    send(connection, moved, commands)
    if order.status is Status.PENDING and moved.status is Status.CONFIRMED:
        for confirmed in order_confirmed(moved):
            record(connection, confirmed, aggregate=moved.id)
    elif order.status is Status.PENDING and moved.status is Status.CANCELLED:
        record(connection, order_cancelled(moved), aggregate=moved.id)
    log.info(
        "checkout moved",
        order_id=moved.id,
        step=checkout.step.value,
        attempt=checkout.attempt,
        status=moved.status.value,
        reason=checkout.reason and checkout.reason.value,
        sent=[command.value for command in commands],
    )
    return moved


def send(connection: Connection, order: Order, commands: Commands) -> None:
    """Record ``commands`` for ``order`` in the outbox, in the transaction of ``connection``."""
    for command in commands:
        record(connection, _message(command, order), aggregate=order.id)


def _message(command: Command, order: Order) -> IntegrationCommand:
    match command:
        case Command.RESERVE_STOCK:
            lines = tuple(
                inventory.StockLine(sku=line.sku, quantity=line.quantity) for line in order.lines
            )
            return inventory.ReserveStock(order_id=order.id, lines=lines)
        case Command.RELEASE_STOCK:
            return inventory.ReleaseStock(order_id=order.id)
        case Command.COMMIT_STOCK:
            return inventory.CommitStock(order_id=order.id)
        case Command.AUTHORIZE_PAYMENT:
            return payments.AuthorizePayment(
                order_id=order.id,
                user_id=order.user_id,
                amount=order.total,
                currency=order.currency,
                card_token=order.card.token,
            )
        case Command.CAPTURE_PAYMENT:
            return payments.CapturePayment(order_id=order.id)
        case Command.VOID_PAYMENT:
            return payments.VoidPayment(order_id=order.id)
        case Command.REFUND_PAYMENT:
            return payments.RefundPayment(order_id=order.id)
