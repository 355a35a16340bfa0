"""Two placements with one Idempotency-Key at the same moment make one order, and both callers
get it: the unique (user, key) lets one insert, and the other answers with the winner's order."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import pytest
from sqlalchemy import Connection

from agora_tools.testing import Headers
from orders.adapters import SqlOrders
from orders.application import DuplicateOrder, find_by_key

from .conftest import Checkout, Fakes, an_order, keyed


async def test_racing_placements_with_one_key_make_one_order(
    checkout: Checkout, fakes: Fakes, alice: Headers
) -> None:
    # Both requests are held inside the catalogue call until both have arrived, so both find
    # the key unused before either inserts.
    fakes.catalogue.gather = 2
    headers = keyed(alice, "double-click")

    first, second = await asyncio.gather(
        checkout.http.post("/orders", json=an_order(), headers=headers),
        checkout.http.post("/orders", json=an_order(), headers=headers),
    )

    assert sorted([first.status_code, second.status_code]) == [200, 202]
    assert first.json()["id"] == second.json()["id"]
    listed = (await checkout.http.get("/orders", headers=alice)).json()["items"]
    assert [item["id"] for item in listed] == [first.json()["id"]]
    assert (await checkout.names()).count("OrderPlaced") == 1


async def test_racing_placements_with_one_key_and_two_bodies_make_one_order(
    checkout: Checkout, fakes: Fakes, alice: Headers
) -> None:
    fakes.catalogue.gather = 2
    headers = keyed(alice, "two-tabs")
    other = an_order(lines=[{"sku": "KIT-WOK-32", "quantity": 5}])

    replies = await asyncio.gather(
        checkout.http.post("/orders", json=an_order(), headers=headers),
        checkout.http.post("/orders", json=other, headers=headers),
    )

    assert sorted(reply.status_code for reply in replies) == [202, 422]
    assert len((await checkout.http.get("/orders", headers=alice)).json()["items"]) == 1


async def test_an_insert_with_a_taken_key_is_told_so(checkout: Checkout, alice: Headers) -> None:
    reply = await checkout.http.post("/orders", json=an_order(), headers=keyed(alice, "taken"))
    user_id = reply.json()["user_id"]
    order = await checkout.uow.query(find_by_key, SqlOrders(), user_id, "taken")
    assert order is not None

    def insert_again(connection: Connection) -> None:
        SqlOrders().add(connection, replace(order, id=str(uuid.uuid4())))

    with pytest.raises(DuplicateOrder):
        await checkout.uow.run(insert_again)
