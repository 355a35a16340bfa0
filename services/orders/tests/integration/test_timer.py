"""The app's own deadline timer runs in the background: an order whose answers never come ends
without anyone calling it, and two replicas' timers do not act twice on one checkout. Each tick
dates the oldest order still PENDING, for the alert on orders pending too long (ADR 34)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from agora.db import UnitOfWork
from agora_tools.testing import Headers, outbox_events
from contracts.inventory import StockRejected
from orders.application import Parts, run_due

from .conftest import START, Checkout, Fakes, an_order, app_for, keyed, settings_for


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.02)


def test_the_background_timer_gives_up_on_an_unanswered_reservation(
    database_url: str, tmp_path: Path, alice: Headers
) -> None:
    # Short steps, so that real time passes their deadlines while the test waits.
    settings = settings_for(
        database_url, tmp_path, step_timeout=0.05, reserve_attempts=2, timer_interval=0.02
    )
    with TestClient(app_for(settings, Fakes())) as client:
        order = client.post("/orders", json=an_order(), headers=keyed(alice)).json()

        def released() -> bool:
            types = [event.type for event in outbox_events(database_url)]
            return "inventory.ReleaseStock.v1" in types

        wait_for(released, "the release of the unanswered reservation")
        seen = client.get(f"/orders/{order['id']}", headers=alice).json()

    types = [event.type for event in outbox_events(database_url)]
    assert types.count("inventory.ReserveStock.v1") == 2
    assert seen["checkout"]["step"] == "compensating"


async def test_two_replicas_timers_firing_together_resend_once(
    checkout: Checkout, database_url: str, alice: Headers
) -> None:
    orders = [await checkout.place(alice) for _ in range(5)]
    await checkout.sent()
    now = checkout.clock.advance(checkout.settings.step_timeout)
    parts = checkout.app.state.resources.get(Parts)
    other = UnitOfWork(database_url, source="orders")
    try:
        await asyncio.gather(run_due(checkout.uow, parts, now), run_due(other, parts, now))
    finally:
        await other.dispose()

    resent = [str(sent.event.subject) for sent in await checkout.sent()]
    assert sorted(resent) == sorted(order["id"] for order in orders)


def pending_since() -> float | None:
    return REGISTRY.get_sample_value("agora_orders_oldest_pending_timestamp_seconds")


async def out_of_stock(checkout: Checkout, order: dict[str, Any]) -> None:
    """The order's reservation is refused, and the order ends CANCELLED at once."""
    await checkout.answer(StockRejected(order_id=order["id"], reason="out_of_stock"), order["id"])


async def test_each_tick_dates_the_oldest_pending_order_or_itself_when_none_is(
    checkout: Checkout, alice: Headers
) -> None:
    first = await checkout.place(alice)
    checkout.clock.advance(10)
    second = await checkout.place(alice)

    await checkout.tick(1)
    assert pending_since() == START.timestamp()

    await out_of_stock(checkout, first)
    await checkout.tick(1)
    assert pending_since() == (START + timedelta(seconds=10)).timestamp()

    await out_of_stock(checkout, second)
    await checkout.tick(1)
    assert (await checkout.order(second["id"], alice))["status"] == "CANCELLED"
    assert pending_since() == checkout.clock().timestamp()
