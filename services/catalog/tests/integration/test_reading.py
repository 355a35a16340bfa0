"""Reading the catalogue: the seed, listing, paging, filters, search, sort and one product."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agora_tools.testing import User, assert_problem, every_page

from .conftest import a_product

PRODUCT_FIELDS = {
    "sku",
    "name",
    "description",
    "price",
    "currency",
    "category",
    "image_url",
    "active",
    "created_at",
    "updated_at",
}


def all_items(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    return [item for page in every_page(client, "/products", limit=100, **params) for item in page]


def test_the_seed_catalogue_holds_at_least_fifty_products_in_six_categories(
    shared: TestClient,
) -> None:
    items = all_items(shared)

    assert len(items) >= 50
    assert len({item["category"] for item in items}) >= 6
    assert all(set(item) == PRODUCT_FIELDS for item in items)
    assert all(item["currency"] == "EUR" and item["price"] > 0 for item in items)


def test_categories_are_listed_with_their_product_counts(shared: TestClient) -> None:
    answer = shared.get("/categories")

    assert answer.status_code == 200
    categories = answer.json()
    assert len(categories) >= 6
    assert all(set(c) == {"slug", "name", "product_count"} for c in categories)
    counted = {c["slug"]: c["product_count"] for c in categories}
    items = all_items(shared)
    for slug, count in counted.items():
        assert count == sum(item["category"] == slug for item in items)


def test_a_page_holds_twenty_products_unless_asked_otherwise(shared: TestClient) -> None:
    body = shared.get("/products").json()

    assert len(body["items"]) == 20
    assert isinstance(body["next_cursor"], str)


@pytest.mark.parametrize("sort", ["name", "-name", "price", "-price"])
def test_paging_with_the_cursor_covers_every_product_exactly_once(
    shared: TestClient, sort: str
) -> None:
    everything = {item["sku"] for item in all_items(shared)}

    pages = every_page(shared, "/products", sort=sort, limit=7)

    skus = [item["sku"] for page in pages for item in page]
    assert len(skus) == len(set(skus)), "a product came twice"
    assert set(skus) == everything
    assert all(len(page) == 7 for page in pages[:-1])
    assert 1 <= len(pages[-1]) <= 7


@pytest.mark.parametrize(
    "name",
    [
        "Ä" * 200,  # two bytes a character
        "名" * 200,  # three bytes a character
        "ß" * 200,  # twice as long once case-folded ("ss")
        "ﬃ" * 200,  # three times as long once case-folded ("ffi")
        "Family mug 👨\u200d👩\u200d👧",  # joined by zero-width joiners
    ],
)
def test_paging_by_name_goes_past_a_product_with_a_long_or_unusual_name(
    client: TestClient, admin: User, name: str
) -> None:
    created = client.post("/products", json=a_product(name=name), headers=admin.headers)
    assert created.status_code == 201, created.text

    for sort in ("name", "-name"):
        pages = every_page(client, "/products", sort=sort, limit=1, category="kitchen")

        skus = [item["sku"] for page in pages for item in page]
        assert "KIT-WOK-32" in skus
        assert len(skus) == len(set(skus))


def test_prices_ascend_or_descend_across_pages(shared: TestClient) -> None:
    up = [
        (i["price"], i["sku"])
        for p in every_page(shared, "/products", sort="price", limit=9)
        for i in p
    ]
    down = [
        (i["price"], i["sku"])
        for p in every_page(shared, "/products", sort="-price", limit=9)
        for i in p
    ]

    assert up == sorted(up)
    assert down == sorted(down, reverse=True)
    assert up[0][0] < up[-1][0]


def test_names_sort_without_regard_to_case(shared: TestClient) -> None:
    names = [item["name"].casefold() for item in all_items(shared, sort="name")]
    backwards = [item["name"].casefold() for item in all_items(shared, sort="-name")]

    assert names == sorted(names)
    assert backwards == sorted(names, reverse=True)


def test_a_category_filter_lists_only_that_category(shared: TestClient) -> None:
    items = all_items(shared, category="coffee-tea")

    assert len(items) >= 5
    assert {item["category"] for item in items} == {"coffee-tea"}


def test_an_unknown_category_gives_an_empty_list(shared: TestClient) -> None:
    answer = shared.get("/products", params={"category": "no-such-shelf"})

    assert answer.status_code == 200
    assert answer.json() == {"items": [], "next_cursor": None}


def test_a_search_word_matches_name_or_description_in_any_case(shared: TestClient) -> None:
    items = all_items(shared, q="CAST iron")

    assert len(items) >= 2
    for item in items:
        text = f"{item['name']} {item['description']}".casefold()
        assert "cast" in text
        assert "iron" in text
    assert "KIT-CAST-PAN-28" in {item["sku"] for item in items}


def test_every_search_word_must_match(shared: TestClient) -> None:
    cast_iron = {item["sku"] for item in all_items(shared, q="cast iron")}
    teapot = {item["sku"] for item in all_items(shared, q="cast iron teapot")}

    assert teapot == {"TEA-POT-CAST-IRON"}
    assert teapot < cast_iron
    assert all_items(shared, q="cast iron xylophone") == []


def test_search_treats_percent_and_underscore_as_plain_characters(shared: TestClient) -> None:
    assert all_items(shared, q="%") == []
    assert all_items(shared, q="_") == []


def test_search_category_and_sort_combine(shared: TestClient) -> None:
    items = all_items(shared, category="books", q="python", sort="-price")

    assert [item["sku"] for item in items] == ["BK-COSMIC-PYTHON"]


def test_empty_parameters_mean_the_defaults(shared: TestClient) -> None:
    answer = shared.get("/products?category=&q=&sort=&limit=&cursor=")

    assert answer.status_code == 200
    assert answer.json() == shared.get("/products").json()


def test_one_product_is_served_by_its_sku(shared: TestClient) -> None:
    answer = shared.get("/products/KIT-SCALE-DIGI")

    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    product = answer.json()
    assert set(product) == PRODUCT_FIELDS
    assert product["sku"] == "KIT-SCALE-DIGI"
    assert product["name"] == "Digital Kitchen Scale"
    assert (product["price"], product["currency"], product["category"]) == (
        1990,
        "EUR",
        "kitchen",
    )
    assert product["created_at"].endswith("Z")


@pytest.mark.parametrize("sku", ["NOPE-404", "kit-scale-digi", "A" * 300])
def test_an_unknown_sku_is_a_404_problem(shared: TestClient, sku: str) -> None:
    answer = shared.get(f"/products/{sku}")

    assert_problem(answer, 404)
    assert answer.json()["title"] == "Product not found"


def test_several_products_are_served_in_one_call(shared: TestClient) -> None:
    one = shared.get("/products/KIT-SCALE-DIGI").json()

    answer = shared.get("/products/batch", params=[("sku", "KIT-SCALE-DIGI"), ("sku", "NOPE-404")])

    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"items": [one]}


def test_a_batch_serves_inactive_products_too_in_the_order_asked(
    client: TestClient, admin: User
) -> None:
    for sku in ("BAT-ONE", "BAT-TWO"):
        assert (
            client.post("/products", json=a_product(sku=sku), headers=admin.headers).status_code
            == 201
        )
    client.patch("/products/BAT-ONE", json={"active": False}, headers=admin.headers)

    answer = client.get(
        "/products/batch", params=[("sku", "BAT-TWO"), ("sku", "BAT-ONE"), ("sku", "BAT-TWO")]
    )

    items = answer.json()["items"]
    assert [(p["sku"], p["active"]) for p in items] == [("BAT-TWO", True), ("BAT-ONE", False)]


@pytest.mark.parametrize("params", [[], [("sku", f"SKU-{n}") for n in range(101)]])
def test_a_batch_of_no_skus_or_too_many_is_a_problem(
    shared: TestClient, params: list[tuple[str, str]]
) -> None:
    answer = shared.get("/products/batch", params=params)

    assert_problem(answer, 422)


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"limit": 0}, 422),
        ({"limit": -5}, 422),
        ({"limit": "ten"}, 422),
        ({"sort": "price-asc"}, 422),
        ({"sort": "created_at"}, 422),
        ({"cursor": "garbage!"}, 400),
        ({"cursor": "W10"}, 400),
        ({"cursor": "x" * 5000}, 422),
        ({"q": "word " * 100}, 422),
    ],
)
def test_a_bad_listing_parameter_is_a_problem(
    shared: TestClient, params: dict[str, Any], status: int
) -> None:
    answer = shared.get("/products", params=params)

    assert_problem(answer, status)


def test_a_cursor_from_a_listing_in_another_order_is_refused(shared: TestClient) -> None:
    cursor = shared.get("/products", params={"sort": "price", "limit": 5}).json()["next_cursor"]

    answer = shared.get("/products", params={"sort": "name", "cursor": cursor})

    assert answer.status_code == 400
    assert answer.json()["title"] == "Invalid cursor"


@pytest.mark.parametrize("sort", ["price", "-price", "name", "-name"])
@pytest.mark.parametrize("key", [2**63, -(2**63) - 1, 10**30])
def test_a_cursor_with_a_key_too_large_for_the_database_is_a_400(
    shared: TestClient, sort: str, key: int
) -> None:
    made_up = json.dumps([sort, key, "KIT-CHEF-KNIFE-20"]).encode()
    cursor = base64.urlsafe_b64encode(made_up).decode().rstrip("=")

    answer = shared.get("/products", params={"sort": sort, "cursor": cursor})

    assert_problem(answer, 400)
    assert answer.json()["type"] == "/problems/invalid-cursor"


def test_the_openapi_document_describes_the_public_routes(shared: TestClient) -> None:
    paths = shared.get("/openapi.json").json()["paths"]

    assert set(paths["/products"]) == {"get", "post"}
    assert set(paths["/products/{sku}"]) == {"get", "patch"}
    assert set(paths["/products/batch"]) == {"get"}
    assert set(paths["/categories"]) == {"get"}
