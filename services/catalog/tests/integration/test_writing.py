"""Changing the catalogue: admin-only create and change, deactivation, paging while it changes,
and loading the seed once."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from agora_tools.testing import User, assert_problem, started_together
from catalog.settings import CatalogSettings

from .conftest import a_product, app_for, listed_skus


def test_an_admin_creates_a_product_that_then_shows_in_the_list(
    client: TestClient, admin: User
) -> None:
    answer = client.post("/products", json=a_product(), headers=admin.headers)

    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert created["sku"] == "KIT-WOK-32"
    assert created["active"] is True
    assert created["created_at"] == created["updated_at"]
    assert answer.headers["location"] == "/products/KIT-WOK-32"
    assert client.get("/products/KIT-WOK-32").json() == created
    assert "KIT-WOK-32" in listed_skus(client, category="kitchen", q="wok")
    counts = {c["slug"]: c["product_count"] for c in client.get("/categories").json()}
    assert counts["kitchen"] == 9


def test_a_customer_may_not_create_a_product(client: TestClient, customer: User) -> None:
    answer = client.post("/products", json=a_product(), headers=customer.headers)

    assert_problem(answer, 403)
    assert client.get("/products/KIT-WOK-32").status_code == 404


def test_creating_without_a_token_is_a_401(client: TestClient) -> None:
    answer = client.post("/products", json=a_product())

    assert_problem(answer, 401)
    assert answer.headers["www-authenticate"].startswith("Bearer")


def test_a_second_product_with_the_same_sku_is_a_409(client: TestClient, admin: User) -> None:
    assert client.post("/products", json=a_product(), headers=admin.headers).status_code == 201

    again = client.post("/products", json=a_product(name="Another Wok"), headers=admin.headers)

    assert again.status_code == 409
    assert again.json()["title"] == "Product already exists"
    assert client.get("/products/KIT-WOK-32").json()["name"] == "Carbon Steel Wok 32 cm"


def test_a_seeded_sku_cannot_be_created_again(client: TestClient, admin: User) -> None:
    answer = client.post("/products", json=a_product(sku="KIT-SCALE-DIGI"), headers=admin.headers)

    assert answer.status_code == 409


def test_a_product_in_an_unknown_category_is_a_422(client: TestClient, admin: User) -> None:
    answer = client.post("/products", json=a_product(category="garden"), headers=admin.headers)

    assert answer.status_code == 422
    assert answer.json()["title"] == "Unknown category"
    assert client.get("/products/KIT-WOK-32").status_code == 404


def test_an_admin_changes_a_products_price_and_details(client: TestClient, admin: User) -> None:
    before = client.get("/products/KIT-SCALE-DIGI").json()

    answer = client.patch(
        "/products/KIT-SCALE-DIGI",
        json={"price": 1790, "name": "Digital Kitchen Scale 5 kg", "image_url": None},
        headers=admin.headers,
    )

    assert answer.status_code == 200, answer.text
    after = answer.json()
    assert (after["price"], after["name"], after["image_url"]) == (
        1790,
        "Digital Kitchen Scale 5 kg",
        None,
    )
    assert after["description"] == before["description"]
    assert after["created_at"] == before["created_at"]
    assert after["updated_at"] > before["updated_at"]
    assert client.get("/products/KIT-SCALE-DIGI").json() == after


def test_moving_a_product_to_another_category_moves_it_in_the_listing(
    client: TestClient, admin: User
) -> None:
    answer = client.patch(
        "/products/BK-DDIA", json={"category": "home-office"}, headers=admin.headers
    )

    assert answer.status_code == 200
    assert "BK-DDIA" in listed_skus(client, category="home-office")
    assert "BK-DDIA" not in listed_skus(client, category="books")


def test_a_deactivated_product_is_hidden_from_lists_but_still_readable(
    client: TestClient, admin: User
) -> None:
    answer = client.patch("/products/KIT-SCALE-DIGI", json={"active": False}, headers=admin.headers)

    assert answer.status_code == 200
    assert answer.json()["active"] is False
    assert "KIT-SCALE-DIGI" not in listed_skus(client, category="kitchen")
    assert listed_skus(client, q="digital kitchen scale") == set()
    counts = {c["slug"]: c["product_count"] for c in client.get("/categories").json()}
    assert counts["kitchen"] == 7
    assert client.get("/products/KIT-SCALE-DIGI").json()["active"] is False

    client.patch("/products/KIT-SCALE-DIGI", json={"active": True}, headers=admin.headers)
    assert "KIT-SCALE-DIGI" in listed_skus(client, category="kitchen")


def test_a_customer_may_not_change_a_product(client: TestClient, customer: User) -> None:
    answer = client.patch("/products/KIT-SCALE-DIGI", json={"price": 1}, headers=customer.headers)

    assert answer.status_code == 403
    assert client.get("/products/KIT-SCALE-DIGI").json()["price"] == 1990
    assert client.patch("/products/KIT-SCALE-DIGI", json={"price": 1}).status_code == 401


def test_a_limit_above_one_hundred_is_served_as_one_hundred(
    client: TestClient, admin: User
) -> None:
    for n in range(40):
        body = a_product(sku=f"KIT-EXTRA-{n:02}", name=f"Extra Pan {n}")
        assert client.post("/products", json=body, headers=admin.headers).status_code == 201

    answer = client.get("/products", params={"limit": 1000})

    assert answer.status_code == 200
    body = answer.json()
    assert len(body["items"]) == 100
    assert body["next_cursor"] is not None
    rest = client.get("/products", params={"limit": 1000, "cursor": body["next_cursor"]}).json()
    assert len(rest["items"]) == 104 - 100
    assert rest["next_cursor"] is None


def test_a_product_added_while_paging_does_not_disturb_the_pages_already_served(
    client: TestClient, admin: User
) -> None:
    first = client.get("/products", params={"sort": "price", "limit": 10}).json()
    cheapest = a_product(sku="AAA-CHEAPEST", price=1)
    assert client.post("/products", json=cheapest, headers=admin.headers).status_code == 201

    second = client.get(
        "/products", params={"sort": "price", "limit": 10, "cursor": first["next_cursor"]}
    ).json()

    first_skus = {item["sku"] for item in first["items"]}
    second_skus = {item["sku"] for item in second["items"]}
    assert not first_skus & second_skus
    assert "AAA-CHEAPEST" not in second_skus
    assert len(second_skus) == 10


def test_the_seed_is_loaded_once_and_a_restart_keeps_the_changes(
    settings: CatalogSettings, admin: User
) -> None:
    with TestClient(app_for(settings)) as first:
        first.patch("/products/KIT-SCALE-DIGI", json={"price": 999}, headers=admin.headers)
        first.patch("/products/BK-DDIA", json={"active": False}, headers=admin.headers)

    with TestClient(app_for(settings)) as second:
        assert second.get("/products/KIT-SCALE-DIGI").json()["price"] == 999
        assert second.get("/products/BK-DDIA").json()["active"] is False
        counts = {c["slug"]: c["product_count"] for c in second.get("/categories").json()}
        assert sum(counts.values()) == 64 - 1


def test_two_replicas_starting_together_load_the_seed_once(
    settings: CatalogSettings, tmp_path: Path
) -> None:
    with started_together([app_for(settings), app_for(settings)]) as clients:
        for client in clients:
            counts = {c["slug"]: c["product_count"] for c in client.get("/categories").json()}
            assert sum(counts.values()) == 64
