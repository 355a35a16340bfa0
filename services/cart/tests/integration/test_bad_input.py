"""Bad input and missing tokens: each is a 4xx problem, never a 500, and changes no cart."""

from __future__ import annotations

from typing import Any

import pytest

from agora_tools.testing import BAD_TOKENS, NOT_AN_OBJECT, PROBLEM, assert_problem, bearer

from .conftest import KEY, WOK, Shop, Shopper

ROUTES = [
    ("GET", "/cart"),
    ("DELETE", "/cart"),
    ("PUT", f"/cart/items/{WOK}"),
    ("DELETE", f"/cart/items/{WOK}"),
]


@pytest.fixture
def holding(alice: Shopper) -> Shopper:
    """Alice, with one wok in her cart."""
    alice.put(WOK, 1)
    return alice


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_without_a_token_the_cart_is_a_401(
    shop: Shop, holding: Shopper, method: str, path: str
) -> None:
    answer = shop.client.request(method, path, json={"quantity": 2})

    assert_problem(answer, 401)
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert holding.lines() == {WOK: 1}


@pytest.mark.parametrize("flaw", BAD_TOKENS)
def test_with_a_bad_token_the_cart_is_a_401(shop: Shop, holding: Shopper, flaw: str) -> None:
    headers = bearer(KEY.spoilt(flaw, ["customer"], sub=holding.id))

    emptied = shop.client.delete("/cart", headers=headers)
    read = shop.client.get("/cart", headers=headers)

    assert emptied.status_code == read.status_code == 401
    assert holding.lines() == {WOK: 1}


@pytest.mark.parametrize(
    "body",
    [
        {"quantity": -1},
        {"quantity": 101},
        {"quantity": 10**30},
        {"quantity": "2"},
        {"quantity": 2.5},
        {"quantity": True},
        {"quantity": None},
        {"quantity": [2]},
        {},
        {"quantity": 2, "unit_price": 1},
        {"quantity": 2, "sku": WOK},
        *NOT_AN_OBJECT,
    ],
    ids=lambda body: repr(body)[:50],
)
def test_a_bad_body_is_a_422_problem_and_changes_nothing(
    shop: Shop, holding: Shopper, body: Any
) -> None:
    answer = shop.client.put(f"/cart/items/{WOK}", json=body, headers=holding.headers)

    assert_problem(answer, 422)
    assert holding.lines() == {WOK: 1}


@pytest.mark.parametrize("raw", [b'{"quantity": 1,', b"not json", b'{"quantity": "\xff"}', b""])
def test_malformed_json_is_a_4xx_problem(shop: Shop, holding: Shopper, raw: bytes) -> None:
    answer = shop.client.put(
        f"/cart/items/{WOK}",
        content=raw,
        headers={**holding.headers, "Content-Type": "application/json"},
    )

    assert answer.status_code in (400, 422)
    assert answer.headers["content-type"] == PROBLEM
    assert holding.lines() == {WOK: 1}


@pytest.mark.parametrize("sku", ["kit-wok-32", "KW", "KIT WOK", "X" * 33, "KIT_WOK", "KIT.WOK"])
def test_a_malformed_sku_is_a_422(shop: Shop, holding: Shopper, sku: str) -> None:
    put = holding.put(sku, 1)
    removed = holding.remove(sku)
    emptied = holding.put(sku, 0)

    assert put.status_code == removed.status_code == emptied.status_code == 422
    assert put.headers["content-type"] == PROBLEM
    assert holding.lines() == {WOK: 1}


def test_the_api_document_names_every_route_and_its_refusals(shop: Shop) -> None:
    paths = shop.client.get("/openapi.json").json()["paths"]

    assert {path: set(operations) for path, operations in paths.items()} == {
        "/cart": {"get", "delete"},
        "/cart/items/{sku}": {"put", "delete"},
    }
    put = paths["/cart/items/{sku}"]["put"]
    assert {"200", "401", "404", "422", "503"} <= set(put["responses"])
    assert set(put["responses"]["404"]["content"]) == {PROBLEM}
    assert put["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/NewQuantity"
    )
