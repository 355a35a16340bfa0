"""The cart app on every store it can keep carts in: SQLite and PostgreSQL (the SQL store), and
Redis (with a SQLite database for the inbox). The catalog service is played by a fake, access
tokens are signed by a test key, and orders' events are delivered through the in-memory bus.

Carts belong to users, so the tests of one module share one app per store, each test with users
of its own (``shop.shopper()``). The Redis on 127.0.0.1:6379 is shared: each app writes under a
key prefix of its own (``agora_tools.testing.redis_prefix``), and only its keys are deleted
afterwards.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from agora.db import UnitOfWork
from agora.errors import ServiceUnavailable
from agora.messaging import CloudEvent
from agora.messaging.envelope import envelope
from agora_tools.pytest_plugin import Clock as Clock
from agora_tools.pytest_plugin import Gathering
from agora_tools.testing import (
    REDIS_URL,
    STORES,
    Delivery,
    InMemoryBus,
    SigningKey,
    database,
    redis_prefix,
)
from cart import application
from cart.bootstrap import create_app
from cart.domain import Product
from cart.entrypoints import subscriptions
from cart.settings import CartSettings
from contracts.orders import OrderLine, OrderPlaced

KEY = SigningKey()
# Where a cart's lines can live: the SQL store on either database, or Redis.
CART_STORES = (*STORES, "redis")

WOK = "KIT-WOK-32"
PRESS = "COF-PRESS"
KETTLE = "OLD-KETTLE"  # no longer sold
MUG = "US-MUG"  # priced in USD
PRODUCTS = {
    WOK: Product(WOK, "Carbon Steel Wok 32 cm", 5490, "EUR", True),
    PRESS: Product(PRESS, "French Press 1 L", 3490, "EUR", True),
    KETTLE: Product(KETTLE, "Stovetop Kettle", 2590, "EUR", False),
    MUG: Product(MUG, "Diner Mug", 900, "USD", True),
}
BULK = [f"BULK-{n:03d}" for n in range(60)]
PRODUCTS.update({sku: Product(sku, f"Bulk item {sku}", 100, "EUR", True) for sku in BULK})


class FakeCatalogue(Gathering):
    """The catalog service: the products above, or down. It counts the calls it answers, and
    holds them while it gathers callers (to make requests race)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.known = dict(PRODUCTS)
        self.down = False
        self.calls: list[list[str]] = []
        Gathering.__init__(self)  # nobody held

    async def products(self, skus: Collection[str]) -> dict[str, Product]:
        if self.down:
            raise ServiceUnavailable("the catalogue is unreachable: catalog is unreachable")
        self.calls.append(sorted(skus))
        await self.gathered()
        return {sku: self.known[sku] for sku in skus if sku in self.known}


@contextmanager
def cart_settings(store: str, directory: Path, **overrides: Any) -> Iterator[CartSettings]:
    """Settings of a cart of its own on ``store``."""
    values: dict[str, Any] = {"data_dir": directory, "log_level": "warning", **overrides}
    if store != "redis":
        with database(store, "cart", directory) as url:
            yield CartSettings(database_url=url, **values)
        return
    # The database keeps the inbox; the lines live under a key prefix of this cart's own.
    with redis_prefix("cart") as prefix, database("sqlite", "cart", directory) as url:
        yield CartSettings(database_url=url, redis_url=REDIS_URL, redis_prefix=prefix, **values)


def redis_keys(prefix: str) -> dict[str, dict[str, str]]:
    """Every hash under ``prefix``, as Redis holds it."""
    with redis.Redis.from_url(REDIS_URL, decode_responses=True) as client:
        return {key: client.hgetall(key) for key in client.scan_iter(match=f"{prefix}*")}


def app_for(settings: CartSettings, catalogue: FakeCatalogue, clock: Clock) -> FastAPI:
    return create_app(settings, verifier=KEY.verifier(), catalog=catalogue, clock=clock)


def order_placed(user_id: str, *skus: str, placed_at: datetime) -> OrderPlaced:
    lines = tuple(
        OrderLine(sku=sku, name=f"Product {sku}", quantity=1, unit_price=100) for sku in skus
    )
    return OrderPlaced(
        order_id=str(uuid.uuid4()),
        user_id=user_id,
        lines=lines,
        total=100 * len(lines),
        currency="EUR",
        placed_at=placed_at,
    )


class Shopper:
    """A logged-in user: their id (the token's subject), and their cart through the API."""

    def __init__(self, client: TestClient, user_id: str) -> None:
        self.client = client
        self.id = user_id
        self.headers = KEY.bearer(["customer"], sub=user_id)

    def cart(self) -> httpx.Response:
        return self._send("GET", "/cart")

    def put(self, sku: str, quantity: Any) -> httpx.Response:
        return self._send("PUT", f"/cart/items/{sku}", json={"quantity": quantity})

    def remove(self, sku: str) -> httpx.Response:
        return self._send("DELETE", f"/cart/items/{sku}")

    def empty(self) -> httpx.Response:
        return self._send("DELETE", "/cart")

    def lines(self) -> dict[str, int]:
        """What the cart holds, as the shopper sees it: quantity by sku."""
        answer = self.cart()
        assert answer.status_code == 200, answer.text
        return {item["sku"]: item["quantity"] for item in answer.json()["items"]}

    def _send(self, method: str, path: str, **options: Any) -> httpx.Response:
        answer: httpx.Response = self.client.request(method, path, headers=self.headers, **options)
        return answer


class Shop:
    """A cart app with its fake catalogue and its clock, and the bus that brings it orders'
    events."""

    def __init__(
        self, client: TestClient, settings: CartSettings, catalogue: FakeCatalogue, clock: Clock
    ) -> None:
        self.client = client
        self.settings = settings
        self.catalogue = catalogue
        self.clock = clock
        resources = client.app.state.resources  # type: ignore[attr-defined]  # TestClient types its app as any ASGI app
        self.parts: application.Parts = resources.get(application.Parts)
        self.store: application.Carts = self.parts.carts

    def shopper(self) -> Shopper:
        """A new user, with an empty cart."""
        return Shopper(self.client, str(uuid.uuid4()))

    def place(self, shopper: Shopper, *skus: str, placed_at: datetime) -> Delivery:
        """Orders says ``shopper`` placed an order of ``skus`` (``.event`` delivers it again)."""
        event = order_placed(shopper.id, *skus, placed_at=placed_at)
        return self.deliver(envelope(event, source="orders", subject=event.order_id))

    def deliver(self, cloud_event: CloudEvent) -> Delivery:
        """Deliver an event to the cart's subscriptions, as a replica's consumer would (the app
        under ``TestClient`` keeps its own loop, so this one runs in a loop of its own)."""

        async def run() -> Delivery:
            uow = UnitOfWork(self.settings.database_url, source="cart")
            try:
                return await InMemoryBus(subscriptions(self.parts), uow).deliver(cloud_event)
            finally:
                await uow.dispose()

        return asyncio.run(run())


@contextmanager
def running_shop(store: str, directory: Path, **overrides: Any) -> Iterator[Shop]:
    catalogue, clock = FakeCatalogue(), Clock()
    with (
        cart_settings(store, directory, **overrides) as settings,
        TestClient(app_for(settings, catalogue, clock), raise_server_exceptions=False) as client,
    ):
        yield Shop(client, settings, catalogue, clock)


@pytest.fixture(scope="module", params=CART_STORES)
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shop]:
    """A cart app per store, shared by the tests of one module."""
    with running_shop(request.param, tmp_path_factory.mktemp("cart")) as shop:
        yield shop


@pytest.fixture
def shop(running: Shop) -> Iterator[Shop]:
    """The module's cart app, its catalogue up and its clock real again after the test."""
    yield running
    running.catalogue.reset()
    running.clock.reset()


@pytest.fixture
def alice(shop: Shop) -> Shopper:
    return shop.shopper()


@pytest.fixture
def bob(shop: Shop) -> Shopper:
    return shop.shopper()
