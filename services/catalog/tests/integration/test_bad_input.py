"""Bad input to the write routes: each kind is a 4xx problem, never a 500, and changes nothing.

These tests share one seeded catalog per store: none of them may leave a trace in it.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from agora_tools.testing import BAD_TOKENS, NOT_AN_OBJECT, PROBLEM, User, assert_problem, bearer

from .conftest import KEY, a_product, listed_skus


@pytest.mark.parametrize("flaw", BAD_TOKENS)
def test_creating_with_a_bad_token_is_a_401(shared: TestClient, flaw: str) -> None:
    answer = shared.post("/products", json=a_product(), headers=bearer(KEY.spoilt(flaw, ["admin"])))

    assert_problem(answer, 401)


@pytest.mark.parametrize(
    "body",
    [
        a_product(price="12"),
        a_product(price=12.5),
        a_product(price=-100),
        a_product(price=0),
        a_product(price=10**12),
        a_product(price=True),
        a_product(price=None),
        a_product(currency="EURO"),
        a_product(currency="eur"),
        a_product(currency="ABC"),
        a_product(sku="kit-wok-32"),
        a_product(sku="KW"),
        a_product(sku="KIT WOK"),
        a_product(sku=1234),
        a_product(name=""),
        a_product(name="   "),
        a_product(name="x" * 201),
        a_product(category="Kitchen"),
        a_product(image_url="ftp://example.com/wok.jpg"),
        a_product(image_url="javascript:alert(1)"),
        a_product(active=False),
        a_product(created_at="2020-01-01T00:00:00Z"),
        a_product(updated_at="2020-01-01T00:00:00Z"),
        a_product(colour="black"),
        {k: v for k, v in a_product().items() if k != "price"},
        {k: v for k, v in a_product().items() if k != "sku"},
        ["KIT-WOK-32"],
        *NOT_AN_OBJECT,
    ],
    ids=lambda body: repr(body)[:60],
)
def test_a_bad_product_is_a_422_problem_and_nothing_is_stored(
    shared: TestClient, admin: User, body: Any
) -> None:
    answer = shared.post("/products", json=body, headers=admin.headers)

    assert_problem(answer, 422)
    assert listed_skus(shared, q="wok") == set()


@pytest.mark.parametrize(
    "raw", [b'{"sku": "KIT-WOK-32",', b"not json at all", b'{"sku": "\xff"}', b""]
)
def test_malformed_json_is_a_4xx_problem(shared: TestClient, admin: User, raw: bytes) -> None:
    headers = {**admin.headers, "Content-Type": "application/json"}

    answer = shared.post("/products", content=raw, headers=headers)

    assert answer.status_code in (400, 422)
    assert answer.headers["content-type"] == PROBLEM


def test_a_body_over_one_mebibyte_is_a_413(shared: TestClient, admin: User) -> None:
    answer = shared.post(
        "/products", json=a_product(description="x" * (1024 * 1024 + 1)), headers=admin.headers
    )

    assert_problem(answer, 413)


@pytest.mark.parametrize(
    "changes",
    [
        {"sku": "NEW-SKU"},
        {"created_at": "2020-01-01T00:00:00Z"},
        {"price": "12"},
        {"price": -1},
        {"currency": "XYZ"},
        {"name": None},
        {"active": "false"},
        {"category": "garden"},
        {"colour": "black"},
    ],
    ids=lambda changes: repr(changes),
)
def test_a_bad_change_is_a_422_problem_and_changes_nothing(
    shared: TestClient, admin: User, changes: dict[str, Any]
) -> None:
    before = shared.get("/products/KIT-SCALE-DIGI").json()

    answer = shared.patch("/products/KIT-SCALE-DIGI", json=changes, headers=admin.headers)

    assert_problem(answer, 422)
    assert shared.get("/products/KIT-SCALE-DIGI").json() == before


def test_changing_an_unknown_product_is_a_404(shared: TestClient, admin: User) -> None:
    answer = shared.patch("/products/NOPE-404", json={"price": 100}, headers=admin.headers)

    assert_problem(answer, 404)
