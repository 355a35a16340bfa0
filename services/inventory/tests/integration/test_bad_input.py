"""Bad input and missing rights: each is a 4xx problem, never a 500, and changes nothing.

These tests share one seeded inventory per store: none of them may leave a trace in it.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from agora_tools.testing import (
    BAD_PAGING,
    BAD_TOKENS,
    NOT_AN_OBJECT,
    PROBLEM,
    User,
    assert_problem,
    bearer,
)
from inventory.application import CURSORS
from inventory.domain import Cursor

from .conftest import KEY, OPENING

KNIFE = "KIT-CHEF-KNIFE-20"
ADJUST = f"/inventory/stock/{KNIFE}/adjustments"
ADMIN_ONLY = [
    ("GET", "/inventory/stock"),
    ("GET", "/inventory/reservations"),
    ("POST", ADJUST),
]


def unchanged(client: TestClient) -> bool:
    return bool(client.get(f"/inventory/stock/{KNIFE}").json()["available"] == OPENING[KNIFE])


@pytest.mark.parametrize(("method", "path"), ADMIN_ONLY)
def test_without_a_token_an_admin_route_is_a_401(
    shared: TestClient, method: str, path: str
) -> None:
    answer = shared.request(method, path, json={"delta": 1, "reason": "count"})

    assert_problem(answer, 401)
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert unchanged(shared)


@pytest.mark.parametrize(("method", "path"), ADMIN_ONLY)
def test_a_customer_may_not_use_an_admin_route(
    shared: TestClient, customer: User, method: str, path: str
) -> None:
    answer = shared.request(
        method, path, json={"delta": 1, "reason": "count"}, headers=customer.headers
    )

    assert_problem(answer, 403)
    assert unchanged(shared)


@pytest.mark.parametrize("flaw", BAD_TOKENS)
def test_adjusting_with_a_bad_token_is_a_401(shared: TestClient, flaw: str) -> None:
    answer = shared.post(
        ADJUST, json={"delta": 1, "reason": "count"}, headers=bearer(KEY.spoilt(flaw, ["admin"]))
    )

    assert answer.status_code == 401
    assert unchanged(shared)


@pytest.mark.parametrize(
    "body",
    [
        {"delta": 0, "reason": "count"},
        {"delta": 1_000_001, "reason": "count"},
        {"delta": -1_000_001, "reason": "count"},
        {"delta": "5", "reason": "count"},
        {"delta": 2.5, "reason": "count"},
        {"delta": True, "reason": "count"},
        {"delta": None, "reason": "count"},
        {"delta": 1, "reason": ""},
        {"delta": 1, "reason": "   "},
        {"delta": 1, "reason": "x" * 201},
        {"delta": 1, "reason": 7},
        {"delta": 1},
        {"reason": "count"},
        {"delta": 1, "reason": "count", "on_hand": 1000},
        {"delta": 1, "reason": "count", "sku": "BK-DDIA"},
        [1, "count"],
        *NOT_AN_OBJECT,
    ],
    ids=lambda body: repr(body)[:50],
)
def test_a_bad_adjustment_is_a_422_problem_and_changes_nothing(
    shared: TestClient, admin: User, body: Any
) -> None:
    answer = shared.post(ADJUST, json=body, headers=admin.headers)

    assert_problem(answer, 422)
    assert unchanged(shared)


@pytest.mark.parametrize("raw", [b'{"delta": 1,', b"not json", b'{"reason": "\xff"}', b""])
def test_malformed_json_is_a_4xx_problem(shared: TestClient, admin: User, raw: bytes) -> None:
    answer = shared.post(
        ADJUST, content=raw, headers={**admin.headers, "Content-Type": "application/json"}
    )

    assert answer.status_code in (400, 422)
    assert answer.headers["content-type"] == PROBLEM
    assert unchanged(shared)


def test_an_idempotency_key_too_long_is_a_422(shared: TestClient, admin: User) -> None:
    answer = shared.post(
        ADJUST,
        json={"delta": 1, "reason": "count"},
        headers={**admin.headers, "Idempotency-Key": "k" * 201},
    )

    assert answer.status_code == 422
    assert unchanged(shared)


@pytest.mark.parametrize("sku", ["kit-knife", "KW", "KIT KNIFE", "X" * 33, "KIT_KNIFE"])
def test_a_malformed_sku_is_a_422(shared: TestClient, admin: User, sku: str) -> None:
    read = shared.get(f"/inventory/stock/{sku}")
    adjusted = shared.post(
        f"/inventory/stock/{sku}/adjustments",
        json={"delta": 1, "reason": "x"},
        headers=admin.headers,
    )

    assert read.status_code == adjusted.status_code == 422
    assert read.headers["content-type"] == PROBLEM


def test_an_unknown_sku_is_a_404(shared: TestClient, admin: User) -> None:
    read = shared.get("/inventory/stock/NOPE-404")
    adjusted = shared.post(
        "/inventory/stock/NOPE-404/adjustments",
        json={"delta": 1, "reason": "x"},
        headers=admin.headers,
    )

    assert read.status_code == adjusted.status_code == 404
    assert read.headers["content-type"] == PROBLEM
    assert shared.get("/inventory/stock/NOPE-404").status_code == 404


@pytest.mark.parametrize(
    "params",
    [*BAD_PAGING, {"status": "lost"}, {"order_id": "o" * 101}],
    ids=repr,
)
def test_bad_listing_parameters_are_a_422(
    shared: TestClient, admin: User, params: dict[str, Any]
) -> None:
    path = "/inventory/reservations" if {"status", "order_id"} & set(params) else "/inventory/stock"

    answer = shared.get(path, params=params, headers=admin.headers)

    assert_problem(answer, 422)


@pytest.mark.parametrize(
    ("path", "cursor"),
    [
        ("/inventory/stock", "not-a-cursor!"),
        ("/inventory/stock", "bm90IGpzb24"),
        ("/inventory/stock", CURSORS.encode(Cursor("reservations", "order-1"))),
        ("/inventory/reservations", CURSORS.encode(Cursor("stock", KNIFE))),
        # A key holding a NUL (PostgreSQL refuses it in text) or not text at all.
        ("/inventory/stock", "WyJzdG9jayIsIktJVFx1MDAwMCJd"),
        ("/inventory/stock", "WyJzdG9jayIsOTIyMzM3MjAzNjg1NDc3NTgwOF0"),
    ],
)
def test_a_cursor_not_handed_out_for_that_listing_is_a_400(
    shared: TestClient, admin: User, path: str, cursor: str
) -> None:
    answer = shared.get(path, params={"cursor": cursor}, headers=admin.headers)

    assert_problem(answer, 400)
    assert answer.json()["type"] == "/problems/invalid-cursor"


def test_an_empty_parameter_means_it_is_not_given(shared: TestClient, admin: User) -> None:
    answer = shared.get(
        "/inventory/reservations",
        params={"status": "", "cursor": "", "limit": ""},
        headers=admin.headers,
    )

    assert answer.status_code == 200
