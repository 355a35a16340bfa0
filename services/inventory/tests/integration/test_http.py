"""Inventory's HTTP API: availability for anyone, adjustments and listings for admins, paging."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from agora_tools.testing import User, assert_problem, every_page
from inventory.settings import InventorySettings

from .conftest import OPENING, Replica, act

KNIFE = "KIT-CHEF-KNIFE-20"
PAN = "KIT-CAST-PAN-28"


def adjust(client: TestClient, admin: User, sku: str, delta: int, **headers: str) -> Any:
    return client.post(
        f"/inventory/stock/{sku}/adjustments",
        json={"delta": delta, "reason": "stock count"},
        headers={**admin.headers, **headers},
    )


def keys_by_page(client: TestClient, path: str, admin: User, **params: Any) -> list[list[str]]:
    """The keys (sku or order id) of every page of a listing, following its cursors."""
    pages = every_page(client, path, admin.headers, **params)
    return [[item.get("sku") or item["order_id"] for item in page] for page in pages]


def test_anyone_sees_how_many_units_are_available(client: TestClient) -> None:
    answer = client.get(f"/inventory/stock/{KNIFE}")

    assert answer.status_code == 200
    assert answer.json() == {"sku": KNIFE, "available": OPENING[KNIFE]}


def test_an_admin_adjustment_changes_what_is_available(client: TestClient, admin: User) -> None:
    answer = adjust(client, admin, KNIFE, 5)

    assert answer.status_code == 200, answer.text
    assert answer.json() == {"sku": KNIFE, "available": OPENING[KNIFE] + 5}
    assert client.get(f"/inventory/stock/{KNIFE}").json()["available"] == OPENING[KNIFE] + 5
    assert adjust(client, admin, KNIFE, -7).json()["available"] == OPENING[KNIFE] - 2
    (row,) = [
        r
        for r in client.get("/inventory/stock", headers=admin.headers).json()["items"]
        if r["sku"] == KNIFE
    ]
    assert (row["on_hand"], row["seeded"], row["adjusted"]) == (
        OPENING[KNIFE] - 2,
        OPENING[KNIFE],
        -2,
    )


def test_an_adjustment_below_what_orders_hold_is_a_409_and_changes_nothing(
    client: TestClient, settings: InventorySettings, admin: User
) -> None:
    async def hold(replica: Replica) -> None:
        await replica.reserve("order-1", KIT_CHEF_KNIFE_20=OPENING[KNIFE] - 1)

    act(settings.database_url, hold)

    answer = adjust(client, admin, KNIFE, -2)

    assert_problem(answer, 409)
    assert answer.json()["title"] == "Not enough stock"
    assert client.get(f"/inventory/stock/{KNIFE}").json()["available"] == 1
    assert adjust(client, admin, KNIFE, -1).json()["available"] == 0
    assert adjust(client, admin, PAN, -OPENING[PAN] - 1).status_code == 409


def test_the_same_idempotency_key_again_gets_the_first_answer_and_applies_once(
    client: TestClient, admin: User
) -> None:
    first = adjust(client, admin, KNIFE, 4, **{"Idempotency-Key": "count-2026-11-24"})
    adjust(client, admin, KNIFE, 1)

    again = adjust(client, admin, KNIFE, 4, **{"Idempotency-Key": "count-2026-11-24"})

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() == {"sku": KNIFE, "available": OPENING[KNIFE] + 4}
    assert client.get(f"/inventory/stock/{KNIFE}").json()["available"] == OPENING[KNIFE] + 5


def test_an_idempotency_key_used_for_another_adjustment_is_a_422(
    client: TestClient, admin: User
) -> None:
    assert adjust(client, admin, KNIFE, 4, **{"Idempotency-Key": "k-1"}).status_code == 200

    other_delta = adjust(client, admin, KNIFE, 3, **{"Idempotency-Key": "k-1"})
    other_sku = adjust(client, admin, PAN, 4, **{"Idempotency-Key": "k-1"})

    assert other_delta.status_code == other_sku.status_code == 422
    assert other_delta.json()["title"] == "Idempotency key reused"
    assert client.get(f"/inventory/stock/{PAN}").json()["available"] == OPENING[PAN]


def test_the_stock_listing_pages_through_every_sku_once_in_sku_order(
    client: TestClient, admin: User
) -> None:
    pages = keys_by_page(client, "/inventory/stock", admin, limit=10)

    skus = [sku for page in pages for sku in page]
    assert [len(page) for page in pages] == [10] * 6 + [4]
    assert skus == sorted(OPENING)


def test_a_limit_above_five_hundred_is_served_as_five_hundred(
    client: TestClient, admin: User
) -> None:
    answer = client.get("/inventory/stock", params={"limit": 100_000}, headers=admin.headers)

    assert answer.status_code == 200
    assert len(answer.json()["items"]) == len(OPENING)
    assert answer.json()["next_cursor"] is None


def test_reservations_are_listed_by_order_with_their_lines_and_status(
    client: TestClient, settings: InventorySettings, admin: User
) -> None:
    async def orders(replica: Replica) -> None:
        await replica.reserve("order-a", KIT_CHEF_KNIFE_20=1)
        await replica.reserve("order-b", KIT_CAST_PAN_28=2, KIT_CHEF_KNIFE_20=1)
        await replica.reserve("order-c", KIT_CAST_PAN_28=1)
        await replica.commit("order-c")
        await replica.release("order-d")

    act(settings.database_url, orders)

    everything = client.get("/inventory/reservations", headers=admin.headers).json()
    active = client.get("/inventory/reservations?status=active", headers=admin.headers).json()
    one = client.get("/inventory/reservations?order_id=order-b", headers=admin.headers).json()

    assert [r["order_id"] for r in everything["items"]] == [
        "order-a",
        "order-b",
        "order-c",
        "order-d",
    ]
    assert [r["status"] for r in everything["items"]] == [
        "active",
        "active",
        "committed",
        "released",
    ]
    assert [r["order_id"] for r in active["items"]] == ["order-a", "order-b"]
    (b,) = one["items"]
    assert b["lines"] == [{"sku": PAN, "quantity": 2}, {"sku": KNIFE, "quantity": 1}]
    assert b["expires_at"] > b["created_at"]
    assert everything["items"][3]["lines"] == []
    assert everything["items"][3]["expires_at"] is None
    assert keys_by_page(client, "/inventory/reservations", admin, limit=1, status="active") == [
        ["order-a"],
        ["order-b"],
    ]
