"""The integration events the catalog will publish, as their consumers will read them."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from catalog.domain import Product
from contracts.catalog import ProductCreated, ProductUpdated

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def a_product() -> Product:
    return Product.create(
        sku="COF-FRENCH-PRESS",
        name="French Press 1 L",
        description="Borosilicate glass.",
        price=3490,
        currency="EUR",
        category="coffee-tea",
        now=NOW,
    )


def test_the_event_types_are_named_by_publisher_name_and_version() -> None:
    assert ProductCreated.type == "catalog.ProductCreated.v1"
    assert ProductUpdated.type == "catalog.ProductUpdated.v1"


def test_a_product_created_event_carries_the_whole_product_through_json() -> None:
    event = ProductCreated(**asdict(a_product()))

    again = ProductCreated.model_validate_json(event.model_dump_json())

    assert again == event
    assert (again.sku, again.price, again.currency, again.active) == (
        "COF-FRENCH-PRESS",
        3490,
        "EUR",
        True,
    )


def test_a_product_updated_event_names_the_changed_fields() -> None:
    product = a_product().change({"price": 2990, "active": False}, now=NOW)

    event = ProductUpdated(**asdict(product), changed=("active", "price"))

    assert event.changed == ("active", "price")
    assert event.price == 2990
    with pytest.raises(ValidationError):
        ProductUpdated(**asdict(product))


@pytest.mark.parametrize("bad", [{"price": 0}, {"currency": "eur"}], ids=["price", "currency"])
def test_an_event_that_breaks_the_contract_does_not_validate(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ProductCreated(**{**asdict(a_product()), **bad})
