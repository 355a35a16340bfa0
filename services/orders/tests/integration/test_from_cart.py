"""Placing an order from what the shopper's cart holds: POST /orders without `lines`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi.testclient import TestClient

from agora_tools.testing import PROBLEM, Headers, outbox_events

from .conftest import Fakes, an_order, keyed

WOK = ("KIT-WOK-32", 2)
PRESS = ("COF-PRESS", 1)


def from_cart(**overrides: Any) -> dict[str, Any]:
    body = an_order(**overrides)
    del body["lines"]
    return body


def test_an_order_without_lines_takes_the_callers_cart_priced_from_the_catalogue(
    client: TestClient, fakes: Fakes, alice: Headers, bob: Headers
) -> None:
    fakes.cart.fill(alice, WOK, PRESS)
    fakes.cart.fill(bob, ("US-MUG", 3))
    # The cart's own idea of a price is never asked for: the catalogue's is what counts.
    fakes.catalogue.products["COF-PRESS"] = replace(
        fakes.catalogue.products["COF-PRESS"], price=4000
    )

    reply = client.post("/orders", json=from_cart(), headers=keyed(alice))

    assert reply.status_code == 202, reply.text
    order = reply.json()
    assert [(line["sku"], line["quantity"], line["unit_price"]) for line in order["lines"]] == [
        ("KIT-WOK-32", 2, 5490),
        ("COF-PRESS", 1, 4000),
    ]
    assert order["total"] == 2 * 5490 + 4000
    assert order["status"] == "PENDING"


def test_an_empty_cart_is_422_and_places_nothing(
    client: TestClient, fakes: Fakes, alice: Headers, settings: Any
) -> None:
    reply = client.post("/orders", json=from_cart(), headers=keyed(alice))

    assert reply.status_code == 422, reply.text
    assert reply.headers["content-type"] == PROBLEM
    assert "cart is empty" in reply.json()["detail"]
    assert client.get("/orders", headers=alice).json()["items"] == []
    assert fakes.cards.tokenized == 0


def test_a_cart_that_is_down_is_503_and_places_nothing(
    client: TestClient, fakes: Fakes, alice: Headers
) -> None:
    fakes.cart.fill(alice, WOK)
    fakes.cart.down = True

    reply = client.post("/orders", json=from_cart(), headers=keyed(alice))

    assert reply.status_code == 503, reply.text
    assert reply.headers["content-type"] == PROBLEM
    assert client.get("/orders", headers=alice).json()["items"] == []


def test_a_cart_holding_an_unknown_product_is_422(
    client: TestClient, fakes: Fakes, alice: Headers
) -> None:
    fakes.cart.fill(alice, WOK, ("GONE-0001", 1))

    reply = client.post("/orders", json=from_cart(), headers=keyed(alice))

    assert reply.status_code == 422, reply.text
    assert reply.headers["content-type"] == PROBLEM


def test_the_same_key_again_finds_the_order_even_after_the_cart_was_emptied(
    client: TestClient, fakes: Fakes, alice: Headers
) -> None:
    fakes.cart.fill(alice, WOK)
    headers = keyed(alice)
    first = client.post("/orders", json=from_cart(), headers=headers)
    assert first.status_code == 202, first.text
    fakes.cart.fill(alice)  # OrderPlaced reached the cart, which let the lines go

    again = client.post("/orders", json=from_cart(), headers=headers)

    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    # The same key with explicit lines is another body.
    other = client.post("/orders", json=an_order(), headers=headers)
    assert other.status_code == 422, other.text


def test_order_placed_from_the_cart_names_its_lines(
    client: TestClient, fakes: Fakes, alice: Headers, settings: Any
) -> None:
    fakes.cart.fill(alice, WOK, PRESS)

    order = client.post("/orders", json=from_cart(), headers=keyed(alice)).json()

    placed = [e for e in outbox_events(settings.database_url) if e.type == "orders.OrderPlaced.v1"]
    assert len(placed) == 1
    assert placed[0].data["order_id"] == order["id"]
    assert [(line["sku"], line["quantity"]) for line in placed[0].data["lines"]] == [WOK, PRESS]


def test_lines_given_explicitly_leave_the_cart_unasked(
    client: TestClient, fakes: Fakes, alice: Headers
) -> None:
    reply = client.post("/orders", json=an_order(), headers=keyed(alice))

    assert reply.status_code == 202, reply.text
    assert fakes.cart.asked == 0


def test_an_empty_list_of_lines_is_still_422_not_the_cart(
    client: TestClient, fakes: Fakes, alice: Headers
) -> None:
    fakes.cart.fill(alice, WOK)

    reply = client.post("/orders", json=an_order(lines=[]), headers=keyed(alice))

    assert reply.status_code == 422, reply.text
    assert fakes.cart.asked == 0
