"""Storage of orders and their checkouts in SQL (SQLite or PostgreSQL), and the clients of the
catalog, payments and cart services."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, fields
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    UniqueConstraint,
    bindparam,
    func,
    select,
    tuple_,
)
from sqlalchemy.exc import IntegrityError

from agora.calls import call, items, readable
from agora.client import ServiceClient
from agora.columns import timestamp
from agora.db import aware
from agora.errors import ServiceUnavailable
from orders.application import Due, DuplicateOrder, Listing
from orders.domain import (
    Address,
    Card,
    Checkout,
    InvalidCard,
    Line,
    Order,
    Priced,
    Reason,
    Requested,
    Status,
    Step,
)

metadata = MetaData()

orders = Table(
    "orders",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(64), nullable=False),
    Column("idempotency_key", String(200), nullable=False),
    # sha256 of the request body, the card number replaced by its last four digits.
    Column("fingerprint", String(64), nullable=False),
    Column("status", String(10), nullable=False),
    Column("reason", String(32), nullable=True),
    Column("lines", JSON, nullable=False),
    Column("total", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("shipping_address", JSON, nullable=False),
    # Never the card number: payments' token for it, its brand and last four digits.
    Column("card_token", String(200), nullable=False),
    Column("card_brand", String(32), nullable=False),
    Column("card_last4", String(4), nullable=False),
    timestamp("placed_at"),
    timestamp("updated_at"),
    timestamp("deadline_at"),
    Column("trace_id", String(32), nullable=True),
    Column("traceparent", String(64), nullable=True),
    CheckConstraint("total > 0", name="ck_orders_total_positive"),
    UniqueConstraint("user_id", "idempotency_key", name="uq_orders_user_idempotency_key"),
    Index("ix_orders_placed_at", "placed_at", "id"),
    Index("ix_orders_user_placed_at", "user_id", "placed_at", "id"),
)

checkouts = Table(
    "checkouts",
    metadata,
    Column(
        "order_id",
        String(36),
        ForeignKey("orders.id", name="fk_checkouts_order"),
        primary_key=True,
    ),
    Column("step", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    # When the timer acts next; null once the checkout is done.
    timestamp("deadline_at", nullable=True),
    Column("reason", String(32), nullable=True),
    Column("reserved", Boolean, nullable=False),
    Column("authorized", Boolean, nullable=False),
    Column("captured", Boolean, nullable=False),
    Column("committed", Boolean, nullable=False),
    Column("awaiting_release", Boolean, nullable=False),
    Column("awaiting_void", Boolean, nullable=False),
    Column("awaiting_refund", Boolean, nullable=False),
    Column("cancel_requested", Boolean, nullable=False),
    Column("retry_scheduled", Boolean, nullable=False),
    # PaymentFailed answers, and sends since the last answer, in the authorizing step.
    Column("failures", Integer, nullable=False),
    Column("silent", Integer, nullable=False),
    Index("ix_checkouts_deadline_at", "deadline_at"),
)

_CHECKOUT_FIELDS = [f.name for f in fields(Checkout)]
_SELECT = select(
    *orders.c,
    *(checkouts.c[name].label(f"checkout_{name}") for name in _CHECKOUT_FIELDS),
).join_from(orders, checkouts, checkouts.c.order_id == orders.c.id)


# Built once, their values bound at execution: SQLAlchemy then reuses each one's cache key and
# compiled form instead of deriving them from a fresh statement per call.
_BY_ID = _SELECT.where(orders.c.id == bindparam("order_id"))
_BY_ID_LOCKED = _BY_ID.with_for_update()
_BY_ID_SKIP_LOCKED = _BY_ID.with_for_update(skip_locked=True)
# Checkouts under way, read from the deadline's index and counted no further than asked.
_IN_FLIGHT = select(func.count()).select_from(
    select(checkouts.c.order_id)
    .where(checkouts.c.deadline_at.is_not(None))
    .limit(bindparam("at_most"))
    .subquery()
)
# The replay check needs only whether the key is taken: no join, no row to decode.
_ID_BY_KEY = select(orders.c.id).where(
    orders.c.user_id == bindparam("user_id"), orders.c.idempotency_key == bindparam("key")
)
_INSERT_ORDER = orders.insert()
_INSERT_CHECKOUT = checkouts.insert()
_UPDATE_ORDER = orders.update().where(orders.c.id == bindparam("b_order_id"))
_UPDATE_CHECKOUT = checkouts.update().where(checkouts.c.order_id == bindparam("b_order_id"))


def _order(row: Row[Any]) -> Order:
    values = row._mapping
    checkout = {name: values[f"checkout_{name}"] for name in _CHECKOUT_FIELDS}
    checkout["step"] = Step(checkout["step"])
    checkout["reason"] = Reason(checkout["reason"]) if checkout["reason"] else None
    checkout["deadline_at"] = aware(checkout["deadline_at"])
    return Order(
        id=values["id"],
        user_id=values["user_id"],
        status=Status(values["status"]),
        reason=Reason(values["reason"]) if values["reason"] else None,
        lines=tuple(Line(**line) for line in values["lines"]),
        total=values["total"],
        currency=values["currency"],
        shipping_address=Address(**values["shipping_address"]),
        card=Card(
            token=values["card_token"], brand=values["card_brand"], last4=values["card_last4"]
        ),
        idempotency_key=values["idempotency_key"],
        fingerprint=values["fingerprint"],
        placed_at=aware(values["placed_at"]),
        updated_at=aware(values["updated_at"]),
        deadline_at=aware(values["deadline_at"]),
        checkout=Checkout(**checkout),
        trace_id=values["trace_id"],
        traceparent=values["traceparent"],
    )


def _order_values(order: Order) -> dict[str, Any]:
    return {
        "id": order.id,
        "user_id": order.user_id,
        "idempotency_key": order.idempotency_key,
        "fingerprint": order.fingerprint,
        "status": order.status.value,
        "reason": order.reason.value if order.reason else None,
        "lines": [asdict(line) for line in order.lines],
        "total": order.total,
        "currency": order.currency,
        "shipping_address": asdict(order.shipping_address),
        "card_token": order.card.token,
        "card_brand": order.card.brand,
        "card_last4": order.card.last4,
        "placed_at": order.placed_at,
        "updated_at": order.updated_at,
        "deadline_at": order.deadline_at,
        "trace_id": order.trace_id,
        "traceparent": order.traceparent,
    }


def _checkout_values(checkout: Checkout) -> dict[str, Any]:
    values = {name: getattr(checkout, name) for name in _CHECKOUT_FIELDS}
    values["step"] = checkout.step.value
    values["reason"] = checkout.reason.value if checkout.reason else None
    return values


class SqlOrders:
    """The :class:`orders.application.Orders` port in SQL, within the caller's transaction."""

    def add(self, connection: Connection, order: Order) -> None:
        try:
            # The order row first: its unique (user, key) is what a racing placement trips on.
            connection.execute(_INSERT_ORDER, _order_values(order))
        except IntegrityError as error:
            raise DuplicateOrder(
                f"an order with Idempotency-Key {order.idempotency_key!r} exists"
            ) from error
        connection.execute(
            _INSERT_CHECKOUT, {"order_id": order.id, **_checkout_values(order.checkout)}
        )

    def by_key(self, connection: Connection, user_id: str, idempotency_key: str) -> Order | None:
        # Placements far outnumber replays: look the key up alone, and load the order only when
        # it is taken.
        order_id = connection.execute(
            _ID_BY_KEY, {"user_id": user_id, "key": idempotency_key}
        ).scalar()
        return None if order_id is None else self.get(connection, order_id)

    def get(
        self,
        connection: Connection,
        order_id: str,
        *,
        lock: bool = False,
        skip_locked: bool = False,
    ) -> Order | None:
        # The locks are rendered on PostgreSQL only; SQLite has one writer at a time anyway.
        if skip_locked:
            statement = _BY_ID_SKIP_LOCKED
        elif lock:
            statement = _BY_ID_LOCKED
        else:
            statement = _BY_ID
        row = connection.execute(statement, {"order_id": order_id}).first()
        return None if row is None else _order(row)

    def save(self, connection: Connection, order: Order) -> None:
        connection.execute(
            _UPDATE_ORDER,
            {
                "b_order_id": order.id,
                "status": order.status.value,
                "reason": order.reason.value if order.reason else None,
                "updated_at": order.updated_at,
            },
        )
        connection.execute(
            _UPDATE_CHECKOUT, {"b_order_id": order.id, **_checkout_values(order.checkout)}
        )

    def listing(self, connection: Connection, listing: Listing, limit: int) -> list[Order]:
        statement = _SELECT
        if listing.user_id is not None:
            statement = statement.where(orders.c.user_id == listing.user_id)
        if listing.status is not None:
            statement = statement.where(orders.c.status == listing.status.value)
        if listing.after is not None:
            statement = statement.where(
                tuple_(orders.c.placed_at, orders.c.id)
                < tuple_(listing.after.placed_at, listing.after.id)
            )
        statement = statement.order_by(orders.c.placed_at.desc(), orders.c.id.desc()).limit(limit)
        return [_order(row) for row in connection.execute(statement)]

    def due(self, connection: Connection, now: datetime, limit: int) -> list[Due]:
        statement = (
            select(checkouts.c.order_id, orders.c.traceparent)
            .join_from(checkouts, orders, checkouts.c.order_id == orders.c.id)
            .where(checkouts.c.deadline_at <= now)
            .order_by(checkouts.c.deadline_at)
            .limit(limit)
        )
        return [
            Due(order_id, traceparent) for order_id, traceparent in connection.execute(statement)
        ]

    def oldest_pending(self, connection: Connection) -> datetime | None:
        # An order is PENDING exactly while its checkout has a deadline (a finished checkout
        # has none): the deadline's index finds those few without reading every order.
        oldest = connection.execute(
            select(func.min(orders.c.placed_at))
            .join_from(checkouts, orders, checkouts.c.order_id == orders.c.id)
            .where(checkouts.c.deadline_at.is_not(None))
        ).scalar()
        return aware(oldest)

    def in_flight(self, connection: Connection, at_most: int) -> int:
        count: int = connection.execute(_IN_FLIGHT, {"at_most": at_most}).scalar_one()
        return count


# --- other services ------------------------------------------------------------------------------


class HttpCatalogService:
    """Prices from the catalog service: one ``GET /products/batch?sku=...`` for the order's skus.

    Every catalog has answered that route since before this client existed, so a 404 to it says
    that the callee is no catalog orders can use (a wrong address, a proxy's answer): the
    catalogue is unavailable (503), rather than asked again sku by sku, which would answer every
    product unknown, one call each.
    """

    def __init__(self, client: ServiceClient, service: str = "catalog") -> None:
        self.client = client
        self.service = service

    async def prices(self, skus: Sequence[str]) -> dict[str, Priced]:
        if not skus:
            return {}
        path = "/products/batch?" + urlencode([("sku", sku) for sku in skus])
        priced = await items(self.client, self.service, "the catalogue", path, _priced, "products")
        wanted = set(skus)
        return {product.sku: product for product in priced if product.sku in wanted}


def _priced(product: Any) -> Priced:
    return Priced(
        sku=str(product["sku"]),
        name=str(product["name"]),
        price=int(product["price"]),
        currency=str(product["currency"]),
        active=bool(product["active"]),
    )


class HttpCartService:
    """The shopper's cart from the cart service: ``GET /cart``, on the shopper's behalf (the
    client passes their bearer token on), so it can only ever be that user's cart."""

    def __init__(self, client: ServiceClient, service: str = "cart") -> None:
        self.client = client
        self.service = service

    async def lines(self) -> list[Requested]:
        return await items(self.client, self.service, "the cart", "/cart", _requested, "lines")


def _requested(line: Any) -> Requested:
    return Requested(sku=str(line["sku"]), quantity=int(line["quantity"]))


class HttpPaymentsService:
    """Card tokens from the payments service: ``POST /payments/cards``, on the shopper's behalf
    (the client passes their bearer token on)."""

    def __init__(self, client: ServiceClient, service: str = "payments") -> None:
        self.client = client
        self.service = service

    async def tokenize(self, card_number: str) -> Card:
        reply = await call(
            self.client,
            self.service,
            "payments",
            "POST",
            "/payments/cards",
            json={"card_number": card_number},
        )
        if reply.status in (400, 422):
            # Payments' own words may quote what it was sent: they are not passed on.
            raise InvalidCard("payments does not accept this card number")
        if reply.status != 201:
            raise ServiceUnavailable(f"payments answered {reply.status} to a card")
        with readable("payments answered with an unreadable card"):
            card = reply.json()
            return Card(
                token=str(card["token"]), brand=str(card["brand"]), last4=str(card["last4"])
            )
