"""The orders app on SQLite and on PostgreSQL (a database per test or per module, from agora-tools'
pytest plugin), with the catalog and payments services played by fakes, and access tokens signed
by a test key.

Two kinds of test use it: HTTP tests through a ``TestClient`` (``client``, ``shared``), and
checkout tests (``checkout``) that run the app's lifespan in the test's own event loop, so the
test can play inventory and payments: read the commands from the orders outbox, publish the
answers through an ``InMemoryBus`` into the orders subscriptions, and fire the deadline timer
with a ``now`` of its choosing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Connection

from agora import context
from agora.db import UnitOfWork
from agora.errors import ServiceUnavailable
from agora.messaging.envelope import CloudEvent, EventModel
from agora.messaging.relay import mark_sent, pending_rows
from agora_tools.pytest_plugin import Clock, Gathering, Service, serving
from agora_tools.testing import Headers, InMemoryBus, SigningKey, bearer
from orders import application
from orders.bootstrap import create_app
from orders.domain import Card, InvalidCard, Priced, Requested
from orders.entrypoints import subscriptions
from orders.settings import OrdersSettings

KEY = SigningKey()

ALICE = "0b7d8a4e-0000-4000-8000-00000000a11c"
BOB = "0b7d8a4e-0000-4000-8000-000000000b0b"
ADMIN = "0b7d8a4e-0000-4000-8000-0000000ad810"
VISA = "4242 4242 4242 4242"


def sign(roles: list[str], *, sub: str, **claims: Any) -> str:
    return KEY.sign(
        roles, sub=sub, email=f"{sub}@example.com", exp=int(time.time()) + 600, **claims
    )


@pytest.fixture
def alice() -> Headers:
    return bearer(sign(["customer"], sub=ALICE))


@pytest.fixture
def bob() -> Headers:
    return bearer(sign(["customer"], sub=BOB))


@pytest.fixture
def admin() -> Headers:
    return bearer(sign(["customer", "admin"], sub=ADMIN))


def keyed(headers: Headers, key: str | None = None) -> Headers:
    """``headers`` with an Idempotency-Key (a fresh one unless given)."""
    return {**headers, "Idempotency-Key": key or str(uuid.uuid4())}


def an_order(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "lines": [{"sku": "KIT-WOK-32", "quantity": 2}, {"sku": "COF-PRESS", "quantity": 1}],
        "shipping_address": {
            "name": "Ada Lovelace",
            "line1": "12 Analytical Street",
            "city": "London",
            "postal_code": "N1 9GU",
            "country": "GB",
        },
        "card_number": VISA,
    }
    body.update(overrides)
    return body


# 2 x 54.90 + 34.90
TOTAL = 2 * 5490 + 3490


class FakeCatalogue(Gathering):
    """The catalog service: a few products, or down; it holds its callers while it gathers them
    (to make placements race)."""

    def __init__(self) -> None:
        super().__init__()
        self.products = {
            "KIT-WOK-32": Priced("KIT-WOK-32", "Carbon Steel Wok 32 cm", 5490, "EUR", True),
            "COF-PRESS": Priced("COF-PRESS", "French Press 1 L", 3490, "EUR", True),
            "OLD-KETTLE": Priced("OLD-KETTLE", "Stovetop Kettle", 2590, "EUR", False),
            "US-MUG": Priced("US-MUG", "Diner Mug", 900, "USD", True),
        }
        for n in range(60):
            sku = f"BULK-{n:03d}"
            self.products[sku] = Priced(sku, f"Bulk item {n}", 100 + n, "EUR", True)
        self.down = False

    async def prices(self, skus: Sequence[str]) -> dict[str, Priced]:
        if self.down:
            raise ServiceUnavailable("catalog is unreachable")
        await self.gathered()
        return {sku: self.products[sku] for sku in skus if sku in self.products}


class FakeCards:
    """The payments service's card tokens. It keeps no number, only how many it was given."""

    def __init__(self) -> None:
        self.refuse = False
        self.down = False
        self.tokenized = 0

    async def tokenize(self, card_number: str) -> Card:
        if self.down:
            raise ServiceUnavailable("payments is unreachable")
        if self.refuse:
            raise InvalidCard("payments does not accept this card number")
        self.tokenized += 1
        return Card(token=f"tok_{uuid.uuid4().hex}", brand="visa", last4=card_number[-4:])


class FakeCart:
    """The cart service: one cart per bearer token, as the real one answers the caller's own."""

    def __init__(self) -> None:
        self.carts: dict[str, list[Requested]] = {}
        self.down = False
        self.asked = 0

    def fill(self, headers: Headers, *lines: tuple[str, int]) -> None:
        token = headers["Authorization"].removeprefix("Bearer ")
        self.carts[token] = [Requested(sku, quantity) for sku, quantity in lines]

    async def lines(self) -> list[Requested]:
        self.asked += 1
        if self.down:
            raise ServiceUnavailable("the cart is unreachable")
        return list(self.carts.get(context.bearer_token.get() or "", []))


@dataclass
class Fakes:
    catalogue: FakeCatalogue = field(default_factory=FakeCatalogue)
    cards: FakeCards = field(default_factory=FakeCards)
    cart: FakeCart = field(default_factory=FakeCart)


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


def settings_for(url: str, data_dir: Path, **overrides: Any) -> OrdersSettings:
    values: dict[str, Any] = {"database_url": url, "data_dir": data_dir, "log_level": "warning"}
    values.update(overrides)
    return OrdersSettings(**values)


def app_for(
    settings: OrdersSettings, fakes: Fakes, clock: application.Clock = application.utc_now
) -> FastAPI:
    verifier = KEY.verifier()
    return create_app(
        settings,
        verifier=verifier,
        catalog=fakes.catalogue,
        payments=fakes.cards,
        cart=fakes.cart,
        clock=clock,
    )


@pytest.fixture(scope="session")
def service() -> Service[OrdersSettings]:
    """The plugin's ``settings`` and ``shared`` (one app per module, on fakes of its own, whose
    tests must not depend on each other) are made this way."""
    return Service(settings_for, lambda settings: app_for(settings, Fakes()))


@pytest.fixture
def client(settings: OrdersSettings, fakes: Fakes) -> Iterator[TestClient]:
    """An orders app of the test's own, on the test's fakes."""
    with serving(app_for(settings, fakes)) as test_client:
        yield test_client


# --- the checkout, played from the test ---------------------------------------------------------

START = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Sent:
    """A message orders put in its outbox: the CloudEvent and the trace it was recorded in."""

    event: CloudEvent
    traceparent: str | None

    @property
    def name(self) -> str:
        # "inventory.ReserveStock.v1" -> "ReserveStock"
        return self.event.type.split(".")[1]


class Checkout:
    """The orders app with the test as inventory and payments."""

    def __init__(
        self, app: FastAPI, http: httpx.AsyncClient, settings: OrdersSettings, clock: Clock
    ) -> None:
        self.app = app
        self.http = http
        self.settings = settings
        self.clock = clock
        uow = app.state.resources.uow
        assert isinstance(uow, UnitOfWork)
        self.uow = uow
        parts = app.state.resources.get(application.Parts)
        self.bus = InMemoryBus(subscriptions(parts), uow, service="orders")

    async def place(self, headers: Headers, **overrides: Any) -> dict[str, Any]:
        reply = await self.http.post("/orders", json=an_order(**overrides), headers=keyed(headers))
        assert reply.status_code == 202, reply.text
        body: dict[str, Any] = reply.json()
        return body

    async def order(self, order_id: str, headers: Headers) -> dict[str, Any]:
        reply = await self.http.get(f"/orders/{order_id}", headers=headers)
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body

    async def sent(self) -> list[Sent]:
        """What orders recorded since the last call, in order (each row then counts as sent)."""

        def drain(connection: Connection) -> list[Sent]:
            rows = pending_rows(connection, 1000)
            mark_sent(connection, [row.seq for row in rows], datetime.now(UTC))
            return [Sent(CloudEvent.from_bytes(row.payload), row.traceparent) for row in rows]

        return await self.uow.run(drain)

    async def names(self) -> list[str]:
        return [sent.name for sent in await self.sent()]

    async def answer(self, event: EventModel, order_id: str) -> None:
        await self.bus.publish(event, aggregate=order_id)

    async def tick(self, seconds: float) -> int:
        """Let ``seconds`` pass and run the deadline timer once."""
        now = self.clock.advance(seconds)
        parts = self.app.state.resources.get(application.Parts)
        return await application.run_due(self.uow, parts, now)


@asynccontextmanager
async def checkout_app(
    database_url: str, data_dir: Path, fakes: Fakes, **overrides: Any
) -> AsyncIterator[Checkout]:
    """The orders app in the test's loop, with ``overrides`` of its settings; its own timer
    looks only once an hour, so that only the test moves time on (``Checkout.tick``)."""
    clock = Clock(START)
    settings = settings_for(database_url, data_dir, timer_interval=3600, **overrides)
    app = app_for(settings, fakes, clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://orders") as http:
            yield Checkout(app, http, settings, clock)


@pytest.fixture
async def checkout(database_url: str, tmp_path: Path, fakes: Fakes) -> AsyncIterator[Checkout]:
    async with checkout_app(database_url, tmp_path, fakes) as app:
        yield app
