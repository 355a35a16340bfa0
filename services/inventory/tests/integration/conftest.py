"""The inventory app on SQLite and on PostgreSQL (a database per test or per module, from
agora-tools' pytest plugin), access tokens signed by a test key, and the checkout's commands
delivered through the in-memory bus.

Tokens are signed here the way identity signs them (EdDSA, ``typ: at+jwt``, a ``kid``); the app
gets a ``TokenVerifier`` whose key source answers with this test key's JWKS.

Command tests are async and talk to the database through a unit of work of their own (as a
replica would); the HTTP tests use the app through ``TestClient``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest

from agora.db import UnitOfWork
from agora.messaging import CloudEvent
from agora_tools.pytest_plugin import Service
from agora_tools.testing import InMemoryBus, SigningKey, outbox_events
from contracts.inventory import CommitStock, ReleaseStock, ReserveStock, StockLine
from inventory import application
from inventory.adapters import SqlStockrooms, load_seed
from inventory.bootstrap import MIGRATIONS, create_app, migrate
from inventory.entrypoints import subscriptions
from inventory.settings import InventorySettings

KEY = SigningKey()
TTL = timedelta(minutes=15)
OPENING = load_seed().quantities


SERVICE = Service.standard(InventorySettings, create_app, KEY, migrations=MIGRATIONS)
app_for = SERVICE.app_for


# The plugin's fixtures: ``client`` a freshly seeded inventory of the test's own, ``shared`` one
# seeded inventory per module.
service = SERVICE.fixture()


class Replica:
    """Inventory's command handling on a unit of work of its own, as one replica has it."""

    def __init__(self, database_url: str, ttl: timedelta = TTL) -> None:
        self.database_url = database_url
        self.uow = UnitOfWork(database_url, source="inventory")
        parts = application.Parts(SqlStockrooms(), reservation_ttl=ttl)
        self.bus = InMemoryBus(subscriptions(parts), self.uow)

    async def reserve(self, order_id: str, **quantities: int) -> None:
        lines = tuple(StockLine(sku=sku, quantity=n) for sku, n in _skus(quantities).items())
        await self.bus.publish(ReserveStock(order_id=order_id, lines=lines), aggregate=order_id)

    async def release(self, order_id: str) -> None:
        await self.bus.publish(ReleaseStock(order_id=order_id), aggregate=order_id)

    async def commit(self, order_id: str) -> None:
        await self.bus.publish(CommitStock(order_id=order_id), aggregate=order_id)

    async def answers(self, order_id: str | None = None) -> list[CloudEvent]:
        """What inventory answered (the events in its outbox), oldest first."""
        events = await asyncio.to_thread(outbox_events, self.database_url)
        return [e for e in events if order_id is None or e.subject == order_id]

    async def stock(self, sku: str) -> tuple[int, int]:
        """(on hand, reserved) of ``sku``."""
        row = await self.uow.query(application.get_stock, SqlStockrooms(), sku)
        return row.on_hand, row.reserved

    async def close(self) -> None:
        await self.uow.dispose()


def act(
    database_url: str, action: Callable[[Replica], Awaitable[object]], *, ttl: timedelta = TTL
) -> None:
    """From a synchronous test: run ``action`` on a replica of the inventory at ``database_url``
    (an app under ``TestClient`` keeps its own loop, so the replica needs one of its own)."""

    async def run() -> None:
        replica = Replica(database_url, ttl)
        try:
            await action(replica)
        finally:
            await replica.close()

    asyncio.run(run())


def _skus(quantities: dict[str, int]) -> dict[str, int]:
    # Keyword arguments cannot hold '-': KIT_PAN means sku KIT-PAN.
    return {sku.replace("_", "-"): n for sku, n in quantities.items()}


def kinds(events: list[CloudEvent]) -> list[str]:
    """The event names of ``events``: ``StockReserved``, ..."""
    return [event.type.split(".")[1] for event in events]


@pytest.fixture
async def replica(settings: InventorySettings) -> AsyncIterator[Replica]:
    """A migrated, seeded inventory database, and a replica handling commands on it."""
    await asyncio.to_thread(migrate, settings)
    running = Replica(settings.database_url)
    await running.uow.run(application.seed_stock, SqlStockrooms(), load_seed())
    yield running
    await running.close()
