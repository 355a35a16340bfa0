"""Many orders racing for the last units, across two replicas on one database: exactly as many
win as there are units, and the stock never goes below what is held.

Each replica is a thread with its own event loop and its own unit of work, as two processes
would be: on SQLite they contend for the write lock, on PostgreSQL for the rows' locks.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import pytest

from inventory import application
from inventory.adapters import SqlStockrooms
from inventory.application import Seed

from .conftest import TTL, Replica, kinds

pytestmark = pytest.mark.timeout(60)

ORDERS = 16
REPLICAS = 2


def run_replica(
    database_url: str, orders: list[tuple[str, dict[str, int]]], start: threading.Barrier
) -> None:
    async def work() -> None:
        replica = Replica(database_url)
        try:
            # Open the connection before the start line, so the race is about the rows.
            await replica.uow.ping()
            start.wait()
            await asyncio.gather(*(replica.reserve(order, **lines) for order, lines in orders))
        finally:
            await replica.close()

    asyncio.run(work())


async def race(replica: Replica, orders: list[tuple[str, dict[str, int]]]) -> None:
    start = threading.Barrier(REPLICAS)
    shares = [orders[n::REPLICAS] for n in range(REPLICAS)]
    await asyncio.gather(
        *(asyncio.to_thread(run_replica, replica.database_url, share, start) for share in shares)
    )


async def test_only_as_many_orders_as_there_are_units_get_the_last_units(
    replica: Replica,
) -> None:
    await replica.uow.run(application.seed_stock, SqlStockrooms(), Seed("race", {"LAST-UNITS": 7}))
    orders = [(f"order-{n:02}", {"LAST_UNITS": 1}) for n in range(ORDERS)]

    await race(replica, orders)

    answers = await replica.answers()
    assert len(answers) == ORDERS
    assert kinds(answers).count("StockReserved") == 7
    assert kinds(answers).count("StockRejected") == ORDERS - 7
    assert await replica.stock("LAST-UNITS") == (7, 7)


async def test_orders_naming_the_same_skus_in_any_order_neither_oversell_nor_deadlock(
    replica: Replica,
) -> None:
    await replica.uow.run(
        application.seed_stock, SqlStockrooms(), Seed("race", {"RACE-A": 5, "RACE-B": 8})
    )
    # Half the orders list A first, half B first: locks taken in line order would deadlock.
    orders = [
        (f"order-{n:02}", {"RACE_A": 1, "RACE_B": 1} if n % 2 else {"RACE_B": 1, "RACE_A": 1})
        for n in range(ORDERS)
    ]

    await race(replica, orders)

    assert kinds(await replica.answers()).count("StockReserved") == 5
    assert await replica.stock("RACE-A") == (5, 5)
    assert await replica.stock("RACE-B") == (8, 5)


def run_expiry(database_url: str, now: datetime, start: threading.Barrier) -> None:
    async def work() -> None:
        replica = Replica(database_url)
        try:
            await replica.uow.ping()
            start.wait()
            # Small batches, so both replicas are at it for several rounds.
            while await replica.uow.run(
                application.expire_reservations, SqlStockrooms(), now=now, limit=3
            ):
                pass
        finally:
            await replica.close()

    asyncio.run(work())


async def test_two_replicas_expiring_at_once_release_each_reservation_once(
    replica: Replica,
) -> None:
    await replica.uow.run(application.seed_stock, SqlStockrooms(), Seed("race", {"RACE-A": 20}))
    for n in range(ORDERS):
        await replica.reserve(f"order-{n:02}", RACE_A=1)
    later = datetime.now(UTC) + TTL + timedelta(seconds=1)
    start = threading.Barrier(REPLICAS)

    await asyncio.gather(
        *(
            asyncio.to_thread(run_expiry, replica.database_url, later, start)
            for _ in range(REPLICAS)
        )
    )

    released = [e for e in await replica.answers() if e.type == "inventory.StockReleased.v1"]
    assert sorted(e.subject or "" for e in released) == [f"order-{n:02}" for n in range(ORDERS)]
    assert {e.data["reason"] for e in released} == {"expired"}
    assert await replica.stock("RACE-A") == (20, 0)
