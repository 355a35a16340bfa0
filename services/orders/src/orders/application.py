"""Orders' use cases: placing an order, reading and cancelling it, and moving its checkout on.

Handlers are plain functions ``handler(session, store, ...)`` run by the unit of work in one
transaction each; ``store`` turns the session into an :class:`Orders` port (the SQL one in
production). Placing an order calls two other services first (the catalogue for prices,
payments for a card token), through the :class:`Catalogue` and :class:`Cards` ports, and only
then opens its transaction: no transaction waits on the network.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog
from opentelemetry import propagate, trace
from opentelemetry.trace import Span
from sqlalchemy.orm import Session

from agora.cursor import CursorCodec
from agora.db import UnitOfWork
from agora.messaging.outbox import record
from contracts.base import IntegrationCommand, IntegrationEvent
from contracts.inventory import (
    CommitStock,
    ReleaseStock,
    ReserveStock,
    StockCommitted,
    StockLine,
    StockRejected,
    StockReleased,
    StockReserved,
)
from contracts.orders import OrderCancelled, OrderConfirmed, OrderLine, OrderPlaced
from contracts.payments import (
    AuthorizePayment,
    CapturePayment,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentDeclined,
    PaymentFailed,
    PaymentRefunded,
    PaymentVoided,
    RefundPayment,
    VoidPayment,
)
from orders.domain import (
    Address,
    Card,
    Checkout,
    Command,
    Commands,
    Cursor,
    IdempotencyKeyReused,
    Order,
    OrderNotFound,
    Priced,
    Requested,
    Rules,
    Status,
    card_digits,
    fingerprint,
    from_cart,
    price,
)

log = structlog.get_logger("orders")
tracer = trace.get_tracer("orders.checkout")

# The answers from inventory and payments the checkout listens to.
ANSWERS: tuple[type[IntegrationEvent], ...] = (
    StockReserved,
    StockRejected,
    StockReleased,
    StockCommitted,
    PaymentAuthorized,
    PaymentDeclined,
    PaymentFailed,
    PaymentCaptured,
    PaymentVoided,
    PaymentRefunded,
)
TIMER_BATCH = 100


class Catalogue(Protocol):
    """Prices at checkout, from the catalog service."""

    async def prices(self, skus: Sequence[str]) -> dict[str, Priced]:
        """The products of ``skus`` that exist (active or not), by sku."""


class Cart(Protocol):
    """The shopper's cart, from the cart service."""

    async def lines(self) -> list[Requested]:
        """What the cart of the user making this request holds."""


class Cards(Protocol):
    """Card tokens, from the payments service."""

    async def tokenize(self, card_number: str) -> Card:
        """A token for the card; :class:`orders.domain.InvalidCard` when payments refuses it."""


class DuplicateOrder(Exception):
    """Another placement with the same user and Idempotency-Key committed first."""


@dataclass(frozen=True, slots=True)
class Due:
    """A checkout whose deadline has passed, and the trace its checkout began in."""

    order_id: str
    traceparent: str | None


@dataclass(frozen=True, slots=True)
class Listing:
    """A request for one page of orders, newest first: one user's, or everyone's (None)."""

    limit: int
    user_id: str | None = None
    status: Status | None = None
    after: Cursor | None = None


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Order]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who asks: a customer sees their own orders, an admin every order."""

    user_id: str
    admin: bool = False

    def may_see(self, order: Order) -> bool:
        return self.admin or order.user_id == self.user_id


class Orders(Protocol):
    """What the handlers need from storage, within the current transaction."""

    def add(self, order: Order) -> None:
        """Store a new order; :class:`DuplicateOrder` when its (user, key) is taken."""

    def by_key(self, user_id: str, idempotency_key: str) -> Order | None: ...

    def get(self, order_id: str, *, lock: bool = False, skip_locked: bool = False) -> Order | None:
        """The order; with ``lock`` its rows are locked until the transaction ends (PostgreSQL),
        and with ``skip_locked`` an order another transaction holds is None."""

    def save(self, order: Order) -> None: ...

    def listing(self, listing: Listing, limit: int) -> list[Order]:
        """Up to ``limit`` orders matching ``listing``, newest first, after its cursor."""

    def due(self, now: datetime, limit: int) -> list[Due]:
        """Up to ``limit`` checkouts whose deadline is at or before ``now``, earliest first."""


Store = Callable[[Session], Orders]
CURSORS = CursorCodec(Cursor)
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- placing -------------------------------------------------------------------------------------


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


async def place_order(
    uow: UnitOfWork,
    store: Store,
    catalogue: Catalogue,
    cards: Cards,
    rules: Rules,
    command: PlaceOrder,
    *,
    cart: Cart | None = None,
    clock: Clock = utc_now,
) -> Placed:
    """Place the order unless its Idempotency-Key placed one already, then answer with that one.

    The cart's lines (for a command without lines), prices and the card token are fetched before
    the transaction. Of two placements with one key racing each other, the unique (user, key)
    lets one insert; the other reads the winner's order. The cart itself is emptied by cart
    when it hears of OrderPlaced, not here: an order placed is not undone by a cart that fails.
    """
    digits = card_digits(command.card_number)
    body = fingerprint(command.lines, command.shipping_address, digits)
    # A replay needs neither the catalogue nor payments: answer it before calling them.
    earlier = await uow.query(find_by_key, store, command.user_id, command.idempotency_key)
    if earlier is not None:
        return _replay(earlier, body)
    requested = command.lines
    if requested is None:
        if cart is None:
            raise TypeError("an order without lines needs the cart service")
        requested = from_cart(await cart.lines())
    prices = await catalogue.prices([line.sku for line in requested])
    lines, total, currency = price(requested, prices)
    card = await cards.tokenize(digits)
    now = clock()
    checkout, commands = Checkout.begin(rules, now)
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
        deadline_at=now + rules.saga_deadline,
        checkout=checkout,
        trace_id=trace_id,
        traceparent=traceparent,
    )
    try:
        placed = await uow.run(record_order, store, order, commands)
    except DuplicateOrder:
        winner = await uow.query(find_by_key, store, command.user_id, command.idempotency_key)
        if winner is None:  # the winner's row is committed before our insert fails
            raise
        return _replay(winner, body)
    if not placed.replayed:
        log.info("order placed", order_id=order.id, total=order.total, currency=order.currency)
    return placed


def record_order(session: Session, store: Store, order: Order, commands: Commands) -> Placed:
    """The placement's one transaction: the order, its checkout, OrderPlaced and the first
    command. :class:`DuplicateOrder` when a request with the same key placed an order since
    ``place_order`` looked: the unique (user, key) refuses the insert, so no second look is
    needed here."""
    store(session).add(order)
    record(
        session,
        OrderPlaced(
            order_id=order.id,
            user_id=order.user_id,
            lines=tuple(
                OrderLine(sku=x.sku, name=x.name, quantity=x.quantity, unit_price=x.unit_price)
                for x in order.lines
            ),
            total=order.total,
            currency=order.currency,
            placed_at=order.placed_at,
        ),
        aggregate=order.id,
    )
    _send(session, order, commands)
    return Placed(order, replayed=False)


def find_by_key(session: Session, store: Store, user_id: str, key: str) -> Order | None:
    return store(session).by_key(user_id, key)


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


# --- reading and cancelling ----------------------------------------------------------------------


def get_order(session: Session, store: Store, order_id: str, viewer: Viewer) -> Order:
    return _visible(store(session).get(order_id), order_id, viewer)


def list_orders(session: Session, store: Store, listing: Listing) -> Page:
    # One row more than the page shows whether another page follows.
    rows = store(session).listing(listing, listing.limit + 1)
    items = rows[: listing.limit]
    more = len(rows) > listing.limit
    return Page(items=items, next_cursor=CURSORS.encode(Cursor.after(items[-1])) if more else None)


def cancel_order(
    session: Session, store: Store, rules: Rules, order_id: str, viewer: Viewer, now: datetime
) -> Order:
    """Cancel an order not yet charged: what the checkout took is given back, and the order is
    CANCELLED once inventory and payments acknowledged it. :class:`OrderCharged` after the pivot."""
    orders = store(session)
    order = _visible(orders.get(order_id, lock=True), order_id, viewer)
    checkout, commands = order.checkout.cancel(rules, now)
    return _advance(session, orders, order, checkout, commands, now)


def _visible(order: Order | None, order_id: str, viewer: Viewer) -> Order:
    # Someone else's order is "not found": its existence is none of the caller's business.
    if order is None or not viewer.may_see(order):
        raise OrderNotFound(f"there is no order {order_id!r}")
    return order


# --- the checkout saga ---------------------------------------------------------------------------


def answer(
    session: Session, store: Store, rules: Rules, event: IntegrationEvent, now: datetime
) -> None:
    """Move the order's checkout on by an answer from inventory or payments."""
    order_id: str = getattr(event, "order_id")  # noqa: B009 (every answer names its order)
    orders = store(session)
    order = orders.get(order_id, lock=True)
    if order is None:
        log.warning("answer for an unknown order", order_id=order_id, answer=event.type)
        return
    checkout, commands = _react(order.checkout, event, rules, now)
    _advance(session, orders, order, checkout, commands, now)


def _react(
    checkout: Checkout, event: IntegrationEvent, rules: Rules, now: datetime
) -> tuple[Checkout, Commands]:
    match event:
        case StockReserved():
            return checkout.stock_reserved(rules, now)
        case StockRejected():
            return checkout.stock_rejected(event.reason, rules, now)
        case StockReleased():
            return checkout.stock_released(rules, now)
        case StockCommitted():
            return checkout.stock_committed(rules, now)
        case PaymentAuthorized():
            return checkout.payment_authorized(rules, now)
        case PaymentDeclined():
            return checkout.payment_declined(event.reason, rules, now)
        case PaymentFailed():
            return checkout.payment_failed(rules, now)
        case PaymentCaptured():
            return checkout.payment_captured(rules, now)
        case PaymentVoided():
            return checkout.payment_voided(rules, now)
        case PaymentRefunded():
            return checkout.payment_refunded(rules, now)
    raise TypeError(f"the checkout does not listen to {event.type}")


def due_checkouts(session: Session, store: Store, now: datetime, limit: int) -> list[Due]:
    return store(session).due(now, limit)


def fire_deadline(
    session: Session, store: Store, rules: Rules, order_id: str, now: datetime
) -> Order | None:
    """Act on one checkout's passed deadline, unless another replica holds it or acted already."""
    orders = store(session)
    order = orders.get(order_id, lock=True, skip_locked=True)
    if order is None:
        return None
    checkout, commands = order.checkout.deadline(rules, now)
    return _advance(session, orders, order, checkout, commands, now)


async def run_due(
    uow: UnitOfWork, store: Store, rules: Rules, now: datetime, *, batch: int = TIMER_BATCH
) -> int:
    """One tick of the deadline timer: act on up to ``batch`` checkouts whose deadline is at or
    before ``now``, each in a transaction of its own. Returns how many were due."""
    due = await uow.query(due_checkouts, store, now, batch)
    for item in due:
        # A resend belongs to the checkout's trace, not to a trace of the timer's own.
        with _checkout_span(item, "checkout deadline"):
            try:
                await uow.run(fire_deadline, store, rules, item.order_id, now)
            except Exception:
                # One order's failure must not hold up the others; it is due again next tick.
                log.exception("checkout deadline failed", order_id=item.order_id)
    return len(due)


def _checkout_span(item: Due, name: str) -> AbstractContextManager[Span | None]:
    if item.traceparent is None:
        return nullcontext()
    parent = propagate.extract({"traceparent": item.traceparent})
    return tracer.start_as_current_span(
        name, context=parent, attributes={"agora.order_id": item.order_id}
    )


def _advance(
    session: Session,
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
    orders.save(moved)
    _send(session, moved, commands)
    if order.status is Status.PENDING and moved.status is Status.CONFIRMED:
        record(
            session,
            OrderConfirmed(
                order_id=moved.id,
                user_id=moved.user_id,
                total=moved.total,
                currency=moved.currency,
            ),
            aggregate=moved.id,
        )
    elif order.status is Status.PENDING and moved.status is Status.CANCELLED:
        assert moved.reason is not None
        record(
            session,
            OrderCancelled(order_id=moved.id, user_id=moved.user_id, reason=moved.reason.value),
            aggregate=moved.id,
        )
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


def _send(session: Session, order: Order, commands: Commands) -> None:
    for command in commands:
        record(session, _message(command, order), aggregate=order.id)


def _message(command: Command, order: Order) -> IntegrationCommand:
    match command:
        case Command.RESERVE_STOCK:
            lines = tuple(StockLine(sku=line.sku, quantity=line.quantity) for line in order.lines)
            return ReserveStock(order_id=order.id, lines=lines)
        case Command.RELEASE_STOCK:
            return ReleaseStock(order_id=order.id)
        case Command.COMMIT_STOCK:
            return CommitStock(order_id=order.id)
        case Command.AUTHORIZE_PAYMENT:
            return AuthorizePayment(
                order_id=order.id,
                user_id=order.user_id,
                amount=order.total,
                currency=order.currency,
                card_token=order.card.token,
            )
        case Command.CAPTURE_PAYMENT:
            return CapturePayment(order_id=order.id)
        case Command.VOID_PAYMENT:
            return VoidPayment(order_id=order.id)
        case Command.REFUND_PAYMENT:
            return RefundPayment(order_id=order.id)
