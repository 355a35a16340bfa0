"""Admission: while as many checkouts are under way as orders takes at once, a new order is
refused at the door (503, Retry-After) rather than lengthening every checkout's wait until its
steps time out and are undone. A replay is still answered, and a checkout that ends frees its
place."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agora_tools.testing import PROBLEM, Headers
from contracts import inventory

from .conftest import Checkout, Fakes, an_order, checkout_app, keyed

LIMIT = 2


@pytest.fixture
async def busy(
    database_url: str, tmp_path: Path, fakes: Fakes, alice: Headers
) -> AsyncIterator[Checkout]:
    """Orders taking ``LIMIT`` checkouts at once, with that many under way: Alice's orders
    placed with the keys ``under-way-0``, ``under-way-1``."""
    async with checkout_app(
        database_url, tmp_path, fakes, max_in_flight=LIMIT, busy_retry_after=2.5
    ) as app:
        for n in range(LIMIT):
            reply = await app.http.post(
                "/orders", json=an_order(), headers=keyed(alice, f"under-way-{n}")
            )
            assert reply.status_code == 202, reply.text
        await app.sent()
        yield app


async def test_past_the_limit_an_order_is_refused_and_nothing_is_placed_or_asked(
    busy: Checkout, fakes: Fakes, alice: Headers
) -> None:
    tokenized = fakes.cards.tokenized

    reply = await busy.http.post("/orders", json=an_order(), headers=keyed(alice))

    assert reply.status_code == 503
    assert reply.headers["content-type"] == PROBLEM
    assert reply.headers["retry-after"] == "3"
    assert "too many checkouts are under way" in reply.json()["detail"]
    assert fakes.cards.tokenized == tokenized  # payments was not asked for a token
    assert await busy.sent() == []  # no OrderPlaced, no ReserveStock
    listed = await busy.http.get("/orders", headers=alice)
    assert len(listed.json()["items"]) == LIMIT


async def test_a_replay_is_answered_at_the_limit(busy: Checkout, alice: Headers) -> None:
    reply = await busy.http.post("/orders", json=an_order(), headers=keyed(alice, "under-way-0"))

    assert reply.status_code == 200
    assert reply.headers["idempotent-replayed"] == "true"
    assert reply.json()["status"] == "PENDING"


async def test_a_checkout_that_ends_frees_its_place(busy: Checkout, alice: Headers) -> None:
    listed = (await busy.http.get("/orders", headers=alice)).json()["items"]
    ended = listed[0]["id"]
    await busy.answer(inventory.StockRejected(order_id=ended, reason="out_of_stock"), ended)
    assert (await busy.order(ended, alice))["status"] == "CANCELLED"

    order = await busy.place(alice)

    assert order["status"] == "PENDING"
    refused = await busy.http.post("/orders", json=an_order(), headers=keyed(alice))
    assert refused.status_code == 503
