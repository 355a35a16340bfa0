"""Bad input: each kind is a clear 4xx problem, never a 500, and places nothing.

These tests share one orders app per store; each asks with a user of its own, so that "nothing
was placed" can be checked by listing that user's orders.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agora_tools.testing import NOT_AN_OBJECT, PROBLEM, Headers, bearer

from .conftest import VISA, an_order, keyed, sign

ADDRESS = an_order()["shipping_address"]


def someone() -> Headers:
    return bearer(sign(["customer"], sub=str(uuid.uuid4())))


def nothing_placed(client: TestClient, headers: Headers) -> bool:
    items: list[Any] = client.get("/orders", headers=headers).json()["items"]
    return items == []


def address(**changes: Any) -> dict[str, Any]:
    return {**ADDRESS, **changes}


def lines(count: int) -> list[dict[str, Any]]:
    return [{"sku": f"BULK-{n:03d}", "quantity": 1} for n in range(count)]


@pytest.mark.parametrize(
    "body",
    [
        an_order(price=1),
        an_order(total=1),
        an_order(status="CONFIRMED"),
        an_order(user_id="someone-else"),
        an_order(currency="EUR"),
        an_order(lines=[{"sku": "KIT-WOK-32", "quantity": 1, "unit_price": 1}]),
        an_order(lines=[]),
        an_order(lines=lines(51)),
        an_order(lines=[{"sku": "KIT-WOK-32", "quantity": 0}]),
        an_order(lines=[{"sku": "KIT-WOK-32", "quantity": 101}]),
        an_order(lines=[{"sku": "KIT-WOK-32", "quantity": -1}]),
        an_order(lines=[{"sku": "KIT-WOK-32", "quantity": "2"}]),
        an_order(lines=[{"sku": "KIT-WOK-32", "quantity": 1.5}]),
        an_order(lines=[{"sku": "KIT-WOK-32", "quantity": True}]),
        an_order(lines=[{"sku": "kit-wok-32", "quantity": 1}]),
        an_order(lines=[{"sku": "../../admin", "quantity": 1}]),
        an_order(lines=[{"sku": "KIT-WOK-32"}]),
        an_order(
            lines=[{"sku": "KIT-WOK-32", "quantity": 1}, {"sku": "KIT-WOK-32", "quantity": 2}]
        ),
        an_order(lines="KIT-WOK-32"),
        an_order(shipping_address=address(country="gb")),
        an_order(shipping_address=address(country="GBR")),
        an_order(shipping_address=address(country="")),
        an_order(shipping_address=address(name="")),
        an_order(shipping_address=address(name="   ")),
        an_order(shipping_address=address(name="x" * 101)),
        an_order(shipping_address=address(line1="a\x00b")),
        an_order(shipping_address=address(city=None)),
        an_order(shipping_address=address(postal_code="1" * 21)),
        an_order(shipping_address=address(planet="Earth")),
        an_order(shipping_address="12 Analytical Street"),
        an_order(card_number="4242 4242 4242 4241"),
        an_order(card_number="4242-4242-4242-4242"),
        an_order(card_number="4242"),
        an_order(card_number="4" * 25),
        an_order(card_number=4242424242424242),
        an_order(card_number=""),
        an_order(card_number="x" * 100),
        {key: value for key, value in an_order().items() if key != "card_number"},
        {key: value for key, value in an_order().items() if key != "lines"},
        {key: value for key, value in an_order().items() if key != "shipping_address"},
        [an_order()],
        "an order",
        *NOT_AN_OBJECT,
    ],
    ids=lambda body: repr(body)[:70],
)
def test_a_bad_order_is_a_422_problem_and_places_nothing(shared: TestClient, body: Any) -> None:
    headers = someone()

    reply = shared.post("/orders", json=body, headers=keyed(headers))

    assert reply.status_code == 422, reply.text
    assert reply.headers["content-type"] == PROBLEM
    assert reply.json()["status"] == 422
    assert "4242424242424242" not in reply.text
    assert nothing_placed(shared, headers)


@pytest.mark.parametrize(
    ("lines_", "sku"),
    [
        ([{"sku": "NO-SUCH-SKU", "quantity": 1}], "NO-SUCH-SKU"),
        (
            [{"sku": "KIT-WOK-32", "quantity": 1}, {"sku": "OLD-KETTLE", "quantity": 1}],
            "OLD-KETTLE",
        ),
    ],
    ids=["unknown", "inactive"],
)
def test_a_product_not_for_sale_is_a_422_naming_its_sku(
    shared: TestClient, lines_: list[dict[str, Any]], sku: str
) -> None:
    headers = someone()

    reply = shared.post("/orders", json=an_order(lines=lines_), headers=keyed(headers))

    assert reply.status_code == 422
    assert reply.json()["type"] == "/problems/product-unavailable"
    assert sku in reply.json()["detail"]
    assert nothing_placed(shared, headers)


def test_products_in_two_currencies_are_a_422(shared: TestClient) -> None:
    body = an_order(lines=[{"sku": "KIT-WOK-32", "quantity": 1}, {"sku": "US-MUG", "quantity": 1}])

    reply = shared.post("/orders", json=body, headers=keyed(someone()))

    assert reply.status_code == 422
    assert reply.json()["type"] == "/problems/mixed-currencies"


def test_fifty_lines_are_fine(shared: TestClient) -> None:
    reply = shared.post("/orders", json=an_order(lines=lines(50)), headers=keyed(someone()))

    assert reply.status_code == 202
    assert len(reply.json()["lines"]) == 50


def test_a_missing_idempotency_key_is_a_400_problem(shared: TestClient) -> None:
    headers = someone()

    for key in (None, "", "   "):
        sent = headers if key is None else {**headers, "Idempotency-Key": key}
        reply = shared.post("/orders", json=an_order(), headers=sent)
        assert reply.status_code == 400
        assert reply.headers["content-type"] == PROBLEM
        assert reply.json()["type"] == "/problems/idempotency-key-required"
    assert nothing_placed(shared, headers)


def test_an_overlong_idempotency_key_is_a_400_problem(shared: TestClient) -> None:
    reply = shared.post("/orders", json=an_order(), headers=keyed(someone(), "k" * 201))

    assert reply.status_code == 400
    assert reply.json()["type"] == "/problems/invalid-idempotency-key"


def test_a_body_that_is_not_json_is_a_400_problem(shared: TestClient) -> None:
    headers = keyed(someone())

    reply = shared.post(
        "/orders", content=b'{"lines": [', headers={**headers, "Content-Type": "application/json"}
    )

    assert reply.status_code == 400
    assert reply.headers["content-type"] == PROBLEM


def test_placing_needs_a_login(shared: TestClient) -> None:
    reply = shared.post("/orders", json=an_order(), headers={"Idempotency-Key": "k"})

    assert reply.status_code == 401
    assert reply.headers["content-type"] == PROBLEM
    assert shared.get("/orders").status_code == 401


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=501", "limit=ten", "status=SHIPPED", "cursor=not-a-cursor"],
)
def test_a_bad_listing_query_is_a_4xx_problem(shared: TestClient, query: str) -> None:
    reply = shared.get(f"/orders?{query}", headers=someone())

    assert reply.status_code in (400, 422)
    assert reply.headers["content-type"] == PROBLEM


def test_a_validation_answer_never_repeats_the_card_number(shared: TestClient) -> None:
    body = an_order(card_number=VISA + "1", shipping_address=address(country="gb"))

    reply = shared.post("/orders", json=body, headers=keyed(someone()))

    assert reply.status_code == 422
    assert any(error["loc"] == ["body", "card_number"] for error in reply.json()["errors"])
    assert VISA not in reply.text
    assert VISA.replace(" ", "") not in reply.text


def test_the_api_document_names_every_route_and_the_required_key(shared: TestClient) -> None:
    document = shared.get("/openapi.json").json()

    assert set(document["paths"]) == {
        "/orders",
        "/orders/{order_id}",
        "/orders/{order_id}/cancel",
        "/orders/{order_id}/events",
    }
    stream = document["paths"]["/orders/{order_id}/events"]["get"]["responses"]["200"]
    assert list(stream["content"]) == ["text/event-stream"]
    (key,) = document["paths"]["/orders"]["post"]["parameters"]
    assert (key["name"], key["in"], key["required"]) == ("Idempotency-Key", "header", True)
