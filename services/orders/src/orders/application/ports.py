"""What orders' handlers work with: the ports bootstrap fills (the repository of orders, the
catalog, payments and cart services, a clock), the :class:`Parts` that carries them to the entry
points, and the values the handlers pass around."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import Connection

from agora.tasks import Bell
from orders.domain import Card, Cursor, Order, Priced, Requested, Rules, Status


class CatalogService(Protocol):
    """Prices at checkout, from the catalog service."""

    async def prices(self, skus: Sequence[str]) -> dict[str, Priced]:
        """The products of ``skus`` that exist (active or not), by sku."""


class CartService(Protocol):
    """The shopper's cart, from the cart service."""

    async def lines(self) -> list[Requested]:
        """What the cart of the user making this request holds."""


class PaymentsService(Protocol):
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
class Viewer:
    """Who asks: a customer sees their own orders, an admin every order."""

    user_id: str
    admin: bool = False

    def may_see(self, order: Order) -> bool:
        return self.admin or order.user_id == self.user_id


class Orders(Protocol):
    """The orders and their checkouts, within the transaction of ``connection``."""

    def add(self, connection: Connection, order: Order) -> None:
        """Store a new order; :class:`DuplicateOrder` when its (user, key) is taken."""

    def by_key(
        self, connection: Connection, user_id: str, idempotency_key: str
    ) -> Order | None: ...

    def get(
        self,
        connection: Connection,
        order_id: str,
        *,
        lock: bool = False,
        skip_locked: bool = False,
    ) -> Order | None:
        """The order; with ``lock`` its rows are locked until the transaction ends (PostgreSQL),
        and with ``skip_locked`` an order another transaction holds is None."""

    def save(self, connection: Connection, order: Order) -> None: ...

    def listing(self, connection: Connection, listing: Listing, limit: int) -> list[Order]:
        """Up to ``limit`` orders matching ``listing``, newest first, after its cursor."""

    def due(self, connection: Connection, now: datetime, limit: int) -> list[Due]:
        """Up to ``limit`` checkouts whose deadline is at or before ``now``, earliest first."""

    def oldest_pending(self, connection: Connection) -> datetime | None:
        """When the oldest order still PENDING was placed; None when none is."""

    def in_flight(self, connection: Connection, at_most: int) -> int:
        """How many checkouts are under way (their orders PENDING), counted up to ``at_most``."""


Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Follow:
    """How a status stream follows its order (from the settings)."""

    poll: float = 0.5
    keepalive: float = 15.0
    max_seconds: float = 300.0


@dataclass(frozen=True, slots=True)
class Parts:
    """What bootstrap chooses for the routes, the subscriptions and the deadline timer.

    ``changes`` rings when a commit of this process may have changed an order, for the status
    streams to look again; ``follow`` is how they follow it.
    """

    orders: Orders
    catalog: CatalogService
    payments: PaymentsService
    cart: CartService
    rules: Rules
    clock: Clock = utc_now
    changes: Bell = field(default_factory=Bell)
    follow: Follow = field(default_factory=Follow)
