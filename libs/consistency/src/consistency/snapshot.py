"""What the checker reads: every service's records, through the gateway, as an admin.

The reads are not one transaction across services (there is none): an order may move on between
reading orders and reading inventory. :func:`read_settled` therefore reads until two snapshots in
a row agree on every order's and shipment's status, after waiting for the orders in progress to
end, for the shipments of just-confirmed orders to be made and for the messages on their way.

Shipping is read when the gateway's topology (``GET /api``) declares it, and then it must answer
like any other service (else :class:`ReadFailed`); a system without it has no shipments to
check (``Snapshot.shipments`` is None). Its shipments are read first, before the orders they
follow, and the mailboxes last: a shipment read is of an order that orders already knows as
CONFIRMED, and a dispatch read has its message written or on its way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar, get_type_hints

import aiohttp

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_Record = TypeVar("_Record", bound="DataclassInstance")


class ReadFailed(RuntimeError):
    """A service could not be read (down, refusing the admin, answering something else)."""


@dataclass(frozen=True, slots=True)
class Line:
    sku: str
    quantity: int


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    user_id: str
    status: str
    step: str
    total: int
    lines: tuple[Line, ...]
    deadline_at: datetime
    # When it last changed: for a CONFIRMED or CANCELLED order, when it ended.
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class StockRow:
    sku: str
    on_hand: int
    reserved: int
    seeded: int
    adjusted: int


@dataclass(frozen=True, slots=True)
class Reservation:
    order_id: str
    lines: tuple[Line, ...]


@dataclass(frozen=True, slots=True)
class Payment:
    order_id: str
    status: str
    captured_amount: int
    refunded_amount: int


@dataclass(frozen=True, slots=True)
class Entry:
    account: str
    debit: int
    credit: int


@dataclass(frozen=True, slots=True)
class Movement:
    id: str
    order_id: str | None
    kind: str
    amount: int
    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class Message:
    """A message in a user's mailbox (notifications): what it is about, not what it says."""

    id: str
    user_id: str
    kind: str
    order_id: str | None
    # The shipment it is about (a ``shipment_dispatched``); None for every other kind.
    shipment_id: str | None = None


@dataclass(frozen=True, slots=True)
class Shipment:
    """A parcel shipping made for a confirmed order, and how far the carrier has moved it."""

    id: str
    order_id: str
    user_id: str
    status: str
    created_at: datetime
    dispatched_at: datetime | None = None
    delivered_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at: datetime
    orders: tuple[Order, ...]
    stock: tuple[StockRow, ...]
    active_reservations: tuple[Reservation, ...]
    payments: tuple[Payment, ...]
    movements: tuple[Movement, ...]
    users: tuple[str, ...] = ()
    messages: tuple[Message, ...] = ()
    # None when the system has no shipping (its topology does not declare it): nothing to check.
    shipments: tuple[Shipment, ...] | None = None


@cache
def _field_types(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _read(cls: type[_Record], raw: Mapping[str, Any], **given: object) -> _Record:
    """A ``cls`` from one item of a listing: each field the item's value of the same name, made
    the field's type (``str``, ``int``), but for those ``given``."""
    return cls(
        **{
            name: given[name] if name in given else kind(raw[name])
            for name, kind in _field_types(cls).items()
        }
    )


def _lines(raw: Any) -> tuple[Line, ...]:
    return tuple(_read(Line, line) for line in raw)


def _when(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _maybe_when(value: str | None) -> datetime | None:
    return None if value is None else _when(value)


def parse_order(raw: Mapping[str, Any]) -> Order:
    return _read(
        Order,
        raw,
        step=str((raw.get("checkout") or {}).get("step", "")),
        lines=_lines(raw["lines"]),
        deadline_at=_when(raw["deadline_at"]),
        updated_at=_when(raw["updated_at"]),
    )


def parse_stock(raw: Mapping[str, Any]) -> StockRow:
    return _read(StockRow, raw)


def parse_reservation(raw: Mapping[str, Any]) -> Reservation:
    return _read(Reservation, raw, lines=_lines(raw["lines"]))


def parse_payment(raw: Mapping[str, Any]) -> Payment:
    return _read(
        Payment,
        raw,
        captured_amount=int(raw.get("captured_amount") or 0),
        refunded_amount=int(raw.get("refunded_amount") or 0),
    )


def parse_movement(raw: Mapping[str, Any]) -> Movement:
    entries = tuple(_read(Entry, entry) for entry in raw["entries"])
    return _read(Movement, raw, order_id=raw.get("order_id"), entries=entries)


def parse_message(raw: Mapping[str, Any]) -> Message:
    order_id = raw.get("order_id")
    shipment_id = raw.get("shipment_id")
    return _read(
        Message,
        raw,
        order_id=None if order_id is None else str(order_id),
        shipment_id=None if shipment_id is None else str(shipment_id),
    )


def parse_shipment(raw: Mapping[str, Any]) -> Shipment:
    return _read(
        Shipment,
        raw,
        created_at=_when(raw["created_at"]),
        dispatched_at=_maybe_when(raw.get("dispatched_at")),
        delivered_at=_maybe_when(raw.get("delivered_at")),
    )


# The service whose shipments are read when the topology declares it, and its listing's page.
SHIPPING = "shipping"
SHIPMENTS_PAGE = 100
# How long after an order is confirmed its shipment may still be on its way: the confirmation
# is relayed at once and shipping labels it in well under a second, but a delivery shipping
# fails is redelivered after 0.5, 2, 5 and 10 s (AGORA_REDELIVERY_BACKOFF), 17.5 s in all, and
# a broker briefly away holds it in orders' outbox (ADR 45).
SHIPMENT_GRACE = timedelta(seconds=30)
# The statuses of a shipment the carrier has collected, and the message each one is due.
DISPATCHED = frozenset({"dispatched", "delivered"})
SHIPMENT_DISPATCHED = "shipment_dispatched"


class Gateway:
    """An admin's view of the system through its gateway."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self._token: str | None = None
        self._services: frozenset[str] | None = None

    async def log_in(self, email: str, password: str) -> None:
        async with self.session.post(
            f"{self.url}/api/identity/token", json={"email": email, "password": password}
        ) as reply:
            if reply.status != 200:
                raise ReadFailed(
                    f"could not log in as {email} ({reply.status}): {await reply.text()}; set "
                    "AGORA_ADMIN_EMAIL and AGORA_ADMIN_PASSWORD to the system's admin"
                )
            self._token = str((await reply.json())["access_token"])

    async def pages(
        self, path: str, *, limit: int = 500, **params: str
    ) -> AsyncIterator[Mapping[str, Any]]:
        """Every item of a paged listing (``{items, next_cursor}``), ``limit`` a page."""
        cursor: str | None = None
        while True:
            query = {**params, "limit": str(limit)}
            if cursor:
                query["cursor"] = cursor
            body = await self.get(path, query)
            for item in body["items"]:
                yield item
            cursor = body.get("next_cursor")
            if not cursor:
                return

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        for attempt in range(5):
            async with self.session.get(
                f"{self.url}{path}", params=params, headers=headers
            ) as reply:
                if reply.status == 200:
                    return await reply.json()
                if reply.status in {429, 502, 503, 504} and attempt < 4:
                    await asyncio.sleep(float(reply.headers.get("Retry-After", "0.5")))
                    continue
                raise ReadFailed(f"GET {path} answered {reply.status}: {await reply.text()}")
        raise AssertionError("unreachable")

    async def services(self) -> frozenset[str]:
        """The services the gateway's topology declares (``GET /api``), asked once."""
        if self._services is None:
            body = await self.get("/api")
            try:
                self._services = frozenset(str(s["name"]) for s in body["services"])
            except (KeyError, TypeError) as error:
                raise ReadFailed(f"GET /api did not list the services: {body!r}") from error
        return self._services

    async def shipments(self) -> tuple[Shipment, ...] | None:
        """Every shipment, or None when the topology has no shipping."""
        if SHIPPING not in await self.services():
            return None
        pages = self.pages("/api/shipments", limit=SHIPMENTS_PAGE)
        return tuple([parse_shipment(s) async for s in pages])

    async def snapshot(self) -> Snapshot:
        taken_at = datetime.now(UTC)
        # Before the orders: a shipment read is then of an order orders knows (see above).
        shipments = await self.shipments()
        orders = tuple([parse_order(o) async for o in self.pages("/api/orders")])
        stock = tuple([parse_stock(s) async for s in self.pages("/api/inventory/stock")])
        reservations = tuple(
            [
                parse_reservation(r)
                async for r in self.pages("/api/inventory/reservations", status="active")
            ]
        )
        payments = tuple([parse_payment(p) async for p in self.pages("/api/payments")])
        movements = tuple(
            [parse_movement(m) async for m in self.pages("/api/payments/ledger/movements")]
        )
        users = tuple([str(u["id"]) async for u in self.pages("/api/identity/users")])
        messages = tuple(
            [parse_message(m) async for m in self.pages("/api/notifications/all", limit=100)]
        )
        return Snapshot(
            taken_at, orders, stock, reservations, payments, movements, users, messages, shipments
        )


async def read_settled(
    gateway: Gateway, *, wait: float, shipment_grace: timedelta = SHIPMENT_GRACE
) -> Snapshot:
    """A snapshot once no order is in progress, every message is written and every order
    confirmed less than ``shipment_grace`` ago has its shipment (or ``wait`` seconds have
    passed), read twice in a row alike, so nothing moved on between the services' reads.
    Messages and shipments follow the events that cause them, so one still on its way is waited
    for rather than reported."""
    deadline = time.monotonic() + wait
    previous: Snapshot | None = None
    while True:
        current = await gateway.snapshot()
        settled = (
            all(
                o.status in {"CONFIRMED", "CANCELLED"} or o.deadline_at <= current.taken_at
                for o in current.orders
            )
            and _mailed(current)
            and not awaiting_shipment(current, shipment_grace)
        )
        stable = previous is not None and _statuses(previous) == _statuses(current)
        if (stable and settled) or (previous is not None and time.monotonic() >= deadline):
            return current
        previous = current
        await asyncio.sleep(0.1 if settled else 0.5)


def awaiting_shipment(snapshot: Snapshot, grace: timedelta) -> tuple[Order, ...]:
    """The CONFIRMED orders without a shipment yet, confirmed less than ``grace`` before the
    snapshot: their shipment may still be on its way (none when shipping is not read)."""
    if snapshot.shipments is None:
        return ()
    shipped = {shipment.order_id for shipment in snapshot.shipments}
    return tuple(
        order
        for order in snapshot.orders
        if order.status == "CONFIRMED"
        and order.id not in shipped
        and order.updated_at + grace > snapshot.taken_at
    )


def _statuses(snapshot: Snapshot) -> tuple[dict[str, str], dict[str, str], int]:
    return (
        {order.id: order.status for order in snapshot.orders},
        {shipment.id: shipment.status for shipment in snapshot.shipments or ()},
        len(snapshot.messages),
    )


def _mailed(snapshot: Snapshot) -> bool:
    """Whether every user, every finished order and every dispatched shipment has at least its
    message."""
    welcomed = {
        m.user_id for m in snapshot.messages if m.order_id is None and m.kind != SHIPMENT_DISPATCHED
    }
    about = {
        m.order_id
        for m in snapshot.messages
        if m.order_id is not None and m.kind != SHIPMENT_DISPATCHED
    }
    finished = {o.id for o in snapshot.orders if o.status in {"CONFIRMED", "CANCELLED"}}
    told = {m.shipment_id for m in snapshot.messages if m.kind == SHIPMENT_DISPATCHED}
    dispatched = {s.id for s in snapshot.shipments or () if s.status in DISPATCHED}
    return set(snapshot.users) <= welcomed and finished <= about and dispatched <= told
