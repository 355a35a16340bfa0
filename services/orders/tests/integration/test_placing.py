"""Placing, reading and cancelling orders over HTTP: what a customer and an admin see."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agora_tools.testing import PROBLEM, Headers, every_page, outbox_events
from orders.settings import OrdersSettings

from .conftest import ALICE, TOTAL, VISA, Fakes, an_order, keyed


def place(client: TestClient, headers: Headers, **overrides: Any) -> dict[str, Any]:
    reply = client.post("/orders", json=an_order(**overrides), headers=keyed(headers))
    assert reply.status_code == 202, reply.text
    body: dict[str, Any] = reply.json()
    return body


def test_an_order_is_accepted_pending_and_priced_from_the_catalogue(
    client: TestClient, alice: Headers
) -> None:
    reply = client.post("/orders", json=an_order(), headers=keyed(alice))

    assert reply.status_code == 202, reply.text
    order = reply.json()
    assert reply.headers["location"] == f"/orders/{order['id']}"
    assert order["status"] == "PENDING"
    assert order["reason"] is None
    assert order["user_id"] == ALICE
    assert order["lines"] == [
        {
            "sku": "KIT-WOK-32",
            "name": "Carbon Steel Wok 32 cm",
            "quantity": 2,
            "unit_price": 5490,
            "line_total": 10980,
        },
        {
            "sku": "COF-PRESS",
            "name": "French Press 1 L",
            "quantity": 1,
            "unit_price": 3490,
            "line_total": 3490,
        },
    ]
    assert order["total"] == TOTAL
    assert order["currency"] == "EUR"
    assert order["shipping_address"]["country"] == "GB"
    assert order["shipping_address"]["line2"] is None
    assert (order["card_brand"], order["card_last4"]) == ("visa", "4242")
    assert "card_number" not in order
    assert "card_token" not in order
    assert order["checkout"] == {"step": "reserving", "attempts": 1}
    assert order["deadline_at"] > order["placed_at"]
    assert order["trace_id"]


def test_placing_announces_the_order_and_asks_inventory_to_reserve_its_lines(
    client: TestClient, settings: OrdersSettings, alice: Headers
) -> None:
    order = place(client, alice)

    placed, reserve = outbox_events(settings.database_url)
    assert placed.type == "orders.OrderPlaced.v1"
    assert placed.subject == order["id"]
    assert placed.data["total"] == TOTAL
    assert [(line["sku"], line["quantity"]) for line in placed.data["lines"]] == [
        ("KIT-WOK-32", 2),
        ("COF-PRESS", 1),
    ]
    assert reserve.type == "inventory.ReserveStock.v1"
    assert reserve.data == {
        "order_id": order["id"],
        "lines": [{"sku": "KIT-WOK-32", "quantity": 2}, {"sku": "COF-PRESS", "quantity": 1}],
    }


def test_the_owner_reads_the_order(client: TestClient, alice: Headers) -> None:
    order = place(client, alice)

    reply = client.get(f"/orders/{order['id']}", headers=alice)

    assert reply.status_code == 200
    assert reply.json() == order


def test_another_customers_order_is_not_found_to_read_or_cancel(
    client: TestClient, alice: Headers, bob: Headers
) -> None:
    order = place(client, alice)

    for reply in (
        client.get(f"/orders/{order['id']}", headers=bob),
        client.post(f"/orders/{order['id']}/cancel", headers=bob),
    ):
        assert reply.status_code == 404
        assert reply.headers["content-type"] == PROBLEM
    assert client.get(f"/orders/{order['id']}", headers=alice).json()["checkout"]["step"] == (
        "reserving"
    )


def test_an_unknown_order_is_not_found(client: TestClient, alice: Headers) -> None:
    assert client.get("/orders/no-such-order", headers=alice).status_code == 404
    assert client.post("/orders/no-such-order/cancel", headers=alice).status_code == 404


def test_a_customer_lists_their_own_orders_and_an_admin_lists_all(
    client: TestClient, alice: Headers, bob: Headers, admin: Headers
) -> None:
    first = place(client, alice)
    second = place(client, alice)
    bobs = place(client, bob)

    mine = client.get("/orders", headers=alice).json()
    assert [item["id"] for item in mine["items"]] == [second["id"], first["id"]]
    assert mine["next_cursor"] is None
    assert [item["id"] for item in client.get("/orders", headers=bob).json()["items"]] == [
        bobs["id"]
    ]
    everyone = client.get("/orders", headers=admin).json()["items"]
    assert {item["id"] for item in everyone} == {first["id"], second["id"], bobs["id"]}
    assert client.get(f"/orders/{first['id']}", headers=admin).status_code == 200


def test_orders_come_in_pages_newest_first(client: TestClient, alice: Headers) -> None:
    placed = [place(client, alice)["id"] for _ in range(5)]

    pages = every_page(client, "/orders", alice, limit=2)

    assert all(len(page) <= 2 for page in pages)
    assert [item["id"] for page in pages for item in page] == list(reversed(placed))


def test_orders_can_be_filtered_by_status(
    client: TestClient, alice: Headers, admin: Headers
) -> None:
    place(client, alice)

    assert len(client.get("/orders?status=PENDING", headers=alice).json()["items"]) == 1
    assert client.get("/orders?status=CANCELLED", headers=admin).json()["items"] == []


def test_the_same_key_returns_the_same_order_once(
    client: TestClient, settings: OrdersSettings, alice: Headers, fakes: Fakes
) -> None:
    headers = keyed(alice, "checkout-1")
    first = client.post("/orders", json=an_order(), headers=headers)
    # The same card typed without spaces is the same body.
    again = client.post(
        "/orders", json=an_order(card_number=VISA.replace(" ", "")), headers=headers
    )

    assert first.status_code == 202
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert len(client.get("/orders", headers=alice).json()["items"]) == 1
    assert fakes.cards.tokenized == 1
    types = [event.type for event in outbox_events(settings.database_url)]
    assert types.count("orders.OrderPlaced.v1") == 1


def test_the_same_key_with_another_body_is_refused(
    client: TestClient, settings: OrdersSettings, alice: Headers
) -> None:
    headers = keyed(alice, "checkout-2")
    assert client.post("/orders", json=an_order(), headers=headers).status_code == 202

    for body in (
        an_order(lines=[{"sku": "KIT-WOK-32", "quantity": 3}]),
        an_order(card_number="5555 5555 5555 4444"),
        an_order(shipping_address={**an_order()["shipping_address"], "city": "Paris"}),
    ):
        reply = client.post("/orders", json=body, headers=headers)
        assert reply.status_code == 422
        assert reply.json()["type"] == "/problems/idempotency-key-reused"

    assert len(client.get("/orders", headers=alice).json()["items"]) == 1


def test_keys_belong_to_their_user(client: TestClient, alice: Headers, bob: Headers) -> None:
    alices = client.post("/orders", json=an_order(), headers=keyed(alice, "shared-key"))
    bobs = client.post("/orders", json=an_order(), headers=keyed(bob, "shared-key"))

    assert alices.status_code == bobs.status_code == 202
    assert alices.json()["id"] != bobs.json()["id"]


@pytest.mark.parametrize("canceller", ["alice", "admin"], ids=["by-its-owner", "by-an-admin"])
def test_an_order_waiting_for_stock_is_cancelled(
    client: TestClient,
    settings: OrdersSettings,
    alice: Headers,
    canceller: str,
    request: pytest.FixtureRequest,
) -> None:
    order = place(client, alice)
    headers: Headers = request.getfixturevalue(canceller)

    reply = client.post(f"/orders/{order['id']}/cancel", headers=headers)

    assert reply.status_code == 200
    assert reply.json()["status"] == "PENDING"
    assert reply.json()["checkout"]["step"] == "compensating"
    assert outbox_events(settings.database_url)[-1].type == "inventory.ReleaseStock.v1"
    # Asking again changes nothing and sends nothing more.
    before = len(outbox_events(settings.database_url))
    assert client.post(f"/orders/{order['id']}/cancel", headers=headers).status_code == 200
    assert len(outbox_events(settings.database_url)) == before


def test_the_catalogue_or_payments_being_down_is_a_503_and_places_nothing(
    client: TestClient, fakes: Fakes, alice: Headers
) -> None:
    fakes.catalogue.down = True
    assert client.post("/orders", json=an_order(), headers=keyed(alice)).status_code == 503
    fakes.catalogue.down = False
    fakes.cards.down = True
    reply = client.post("/orders", json=an_order(), headers=keyed(alice))

    assert reply.status_code == 503
    assert reply.headers["content-type"] == PROBLEM
    assert client.get("/orders", headers=alice).json()["items"] == []


def test_a_card_payments_refuses_is_a_422_on_card_number_without_its_value(
    client: TestClient, fakes: Fakes, alice: Headers
) -> None:
    fakes.cards.refuse = True

    reply = client.post("/orders", json=an_order(), headers=keyed(alice))

    assert reply.status_code == 422
    assert reply.json()["errors"][0]["loc"] == ["body", "card_number"]
    # Neither the number nor any part of it (a random request id may hold "4242" by chance).
    body = reply.json()
    del body["request_id"]
    assert "4242" not in json.dumps(body)
    assert client.get("/orders", headers=alice).json()["items"] == []
