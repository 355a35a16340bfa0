"""Requests of one shopper at the same moment, on every store: the store itself keeps a cart
within its limit, so two new lines that both found room cannot both take it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cart.bootstrap import create_app
from cart.settings import CartSettings

from .conftest import BULK, CART_STORES, KEY, Clock, FakeCatalogue, cart_settings


@pytest.fixture(params=CART_STORES)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CartSettings]:
    # A synchronous fixture: making a PostgreSQL database runs a loop of its own.
    with cart_settings(request.param, tmp_path) as settings:
        yield settings


async def test_two_new_lines_at_once_in_a_cart_with_room_for_one_leave_it_full(
    settings: CartSettings,
) -> None:
    catalogue = FakeCatalogue()
    headers = KEY.bearer(["customer"])
    app = create_app(settings, verifier=KEY.verifier(), catalog=catalogue, clock=Clock())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cart") as http,
    ):
        for sku in BULK[:49]:
            assert (
                await http.put(f"/cart/items/{sku}", json={"quantity": 1}, headers=headers)
            ).status_code == 200
        # Both requests are inside the catalogue, having seen 49 lines, before either writes.
        catalogue.gather = 2
        answers = await asyncio.gather(
            *(
                http.put(f"/cart/items/{sku}", json={"quantity": 1}, headers=headers)
                for sku in BULK[49:51]
            )
        )
        catalogue.gather = 0
        cart = (await http.get("/cart", headers=headers)).json()

    assert sorted(answer.status_code for answer in answers) == [200, 422]
    assert len(cart["items"]) == 50
