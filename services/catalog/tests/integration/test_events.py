"""What the catalog tells other services: ProductCreated and ProductUpdated, written to its outbox
in the transaction of the change, and nothing for a change that did not happen."""

from __future__ import annotations

from fastapi.testclient import TestClient

from agora_tools.testing import User, outbox_events
from catalog.settings import CatalogSettings

from .conftest import a_product

SEEDED = 64


def test_the_seed_announces_every_product_it_creates(
    client: TestClient, settings: CatalogSettings
) -> None:
    events = outbox_events(settings.database_url)

    assert len(events) == SEEDED
    assert {event.type for event in events} == {"catalog.ProductCreated.v1"}
    assert all(event.source == "catalog" for event in events)


def test_creating_a_product_records_product_created_with_the_whole_product(
    client: TestClient, settings: CatalogSettings, admin: User
) -> None:
    answer = client.post("/products", json=a_product(), headers=admin.headers)
    assert answer.status_code == 201

    event = outbox_events(settings.database_url)[-1]
    assert event.type == "catalog.ProductCreated.v1"
    assert event.subject == "KIT-WOK-32"
    assert event.data["price"] == a_product()["price"]
    assert event.data["name"] == a_product()["name"]
    assert event.data["active"] is True


def test_changing_a_product_records_product_updated_naming_the_changed_fields(
    client: TestClient, settings: CatalogSettings, admin: User
) -> None:
    client.post("/products", json=a_product(), headers=admin.headers)

    answer = client.patch(
        "/products/KIT-WOK-32", json={"price": 1234, "active": False}, headers=admin.headers
    )
    assert answer.status_code == 200

    event = outbox_events(settings.database_url)[-1]
    assert event.type == "catalog.ProductUpdated.v1"
    assert event.subject == "KIT-WOK-32"
    assert event.data["price"] == 1234
    assert event.data["active"] is False
    assert sorted(event.data["changed"]) == ["active", "price"]


def test_a_refused_or_empty_change_records_nothing(
    client: TestClient, settings: CatalogSettings, admin: User, customer: User
) -> None:
    client.post("/products", json=a_product(), headers=admin.headers)
    before = len(outbox_events(settings.database_url))

    assert client.post("/products", json=a_product(), headers=admin.headers).status_code == 409
    assert (
        client.post(
            "/products", json=a_product(sku="KIT-X-1"), headers=customer.headers
        ).status_code
        == 403
    )
    same_price = a_product()["price"]
    assert (
        client.patch(
            "/products/KIT-WOK-32", json={"price": same_price}, headers=admin.headers
        ).status_code
        == 200
    )

    assert len(outbox_events(settings.database_url)) == before
