"""The use cases over in-memory products, and the seed file shipped in the package."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from unittest.mock import Mock

import pytest
from sqlalchemy import Connection

from catalog import application
from catalog.adapters import load_seed
from catalog.application import (
    CategorySummary,
    CreateProduct,
    Listing,
    Products,
    Seed,
)
from catalog.domain import (
    Category,
    InvalidProduct,
    Product,
    ProductExists,
    ProductNotFound,
    Sort,
    UnknownCategory,
    search_text,
)


class MemoryProducts(Products):
    """The Products port over dicts, with the listing rules written the plain way."""

    def __init__(self) -> None:
        self.products: dict[str, Product] = {}
        self.category_names: dict[str, str] = {}
        self.seeds: set[str] = set()

    def get(self, connection: Connection, sku: str, *, for_update: bool = False) -> Product | None:
        return self.products.get(sku)

    def many(self, connection: Connection, skus: Sequence[str]) -> list[Product]:
        return [self.products[sku] for sku in skus if sku in self.products]

    def add(self, connection: Connection, product: Product) -> None:
        if product.sku in self.products:
            raise ProductExists(product.sku)
        self.products[product.sku] = product

    def save(self, connection: Connection, product: Product) -> None:
        self.products[product.sku] = product

    def has_category(self, connection: Connection, slug: str) -> bool:
        return slug in self.category_names

    def add_category(self, connection: Connection, category: Category) -> None:
        self.category_names[category.slug] = category.name

    def categories(self, connection: Connection) -> list[CategorySummary]:
        return [
            CategorySummary(
                slug,
                name,
                sum(p.active and p.category == slug for p in self.products.values()),
            )
            for slug, name in sorted(self.category_names.items(), key=lambda c: c[1])
        ]

    def listing(self, connection: Connection, listing: Listing, limit: int) -> list[Product]:
        def position(product: Product) -> tuple[str | int, str]:
            return (listing.sort.key(product), product.sku)

        found = [
            p
            for p in self.products.values()
            if p.active
            and listing.category in (None, p.category)
            and all(w in search_text(p.name, p.description) for w in listing.words)
        ]
        found.sort(key=position, reverse=listing.sort.descending)
        if listing.after is not None:
            start = (listing.after.key, listing.after.sku)
            found = [
                p
                for p in found
                if (position(p) < start if listing.sort.descending else position(p) > start)
            ]
        return found[:limit]

    def claim_seed(self, connection: Connection, name: str, now: datetime) -> bool:
        if name in self.seeds:
            return False
        self.seeds.add(name)
        return True


@pytest.fixture
def connection() -> Connection:
    # A real ``info``: recording an event keeps its outbox writer there until the commit.
    return Mock(spec_set=Connection, info={})


@pytest.fixture
def catalogue(connection: Connection) -> MemoryProducts:
    memory = MemoryProducts()
    memory.add_category(connection, Category("kitchen", "Kitchen"))
    memory.add_category(connection, Category("books", "Books"))
    return memory


def new_product(sku: str = "KIT-PAN-28", **overrides: object) -> CreateProduct:
    fields: dict[str, object] = {
        "sku": sku,
        "name": "Cast Iron Pan",
        "description": "Heavy and black.",
        "price": 4490,
        "currency": "EUR",
        "category": "kitchen",
    }
    fields.update(overrides)
    return CreateProduct(**fields)  # type: ignore[arg-type]


def test_a_created_product_is_stored_active(
    connection: Connection, catalogue: MemoryProducts
) -> None:
    product = application.create_product(connection, catalogue, new_product())

    assert catalogue.products["KIT-PAN-28"] == product
    assert product.active


def test_a_product_in_an_unknown_category_is_refused(
    connection: Connection, catalogue: MemoryProducts
) -> None:
    with pytest.raises(UnknownCategory, match="garden"):
        application.create_product(connection, catalogue, new_product(category="garden"))
    assert catalogue.products == {}


def test_a_second_product_with_the_same_sku_is_refused(
    connection: Connection, catalogue: MemoryProducts
) -> None:
    application.create_product(connection, catalogue, new_product())

    with pytest.raises(ProductExists):
        application.create_product(connection, catalogue, new_product(name="Other"))
    assert catalogue.products["KIT-PAN-28"].name == "Cast Iron Pan"


def test_a_product_that_breaks_a_rule_is_not_stored(
    connection: Connection, catalogue: MemoryProducts
) -> None:
    with pytest.raises(InvalidProduct):
        application.create_product(connection, catalogue, new_product(price=0))
    assert catalogue.products == {}


def test_changing_a_missing_product_says_not_found(
    connection: Connection, catalogue: MemoryProducts
) -> None:
    with pytest.raises(ProductNotFound):
        application.change_product(connection, catalogue, "NOPE-1", {"price": 5})


def test_moving_a_product_into_an_unknown_category_is_refused(
    connection: Connection, catalogue: MemoryProducts
) -> None:
    application.create_product(connection, catalogue, new_product())

    with pytest.raises(UnknownCategory):
        application.change_product(connection, catalogue, "KIT-PAN-28", {"category": "garden"})
    assert catalogue.products["KIT-PAN-28"].category == "kitchen"


def test_a_deactivated_product_leaves_the_listing_and_the_category_count(
    connection: Connection, catalogue: MemoryProducts
) -> None:
    application.create_product(connection, catalogue, new_product("KIT-A"))
    application.create_product(connection, catalogue, new_product("KIT-B"))

    application.change_product(connection, catalogue, "KIT-A", {"active": False})

    page = application.list_products(connection, catalogue, Listing(sort=Sort.NAME, limit=10))
    assert [p.sku for p in page.items] == ["KIT-B"]
    counts = {c.slug: c.product_count for c in application.list_categories(connection, catalogue)}
    assert counts == {"kitchen": 1, "books": 0}


def test_several_products_come_in_the_order_asked_without_unknown_skus_or_repeats(
    connection: Connection, catalogue: MemoryProducts
) -> None:
    for sku in ("KIT-A-1", "KIT-B-2", "KIT-C-3"):
        application.create_product(connection, catalogue, new_product(sku))
    application.change_product(connection, catalogue, "KIT-B-2", {"active": False})

    found = application.get_products(
        connection, catalogue, ["KIT-C-3", "NOPE-1", "KIT-B-2", "KIT-C-3", "KIT-A-1"]
    )

    assert [p.sku for p in found] == ["KIT-C-3", "KIT-B-2", "KIT-A-1"]
    assert not found[1].active


def test_pages_follow_each_other_until_the_last_has_no_cursor(
    connection: Connection, catalogue: MemoryProducts
) -> None:
    for n in range(5):
        application.create_product(connection, catalogue, new_product(f"KIT-{n}", price=100 + n))

    seen: list[str] = []
    after = None
    pages = 0
    while True:
        listing = Listing(sort=Sort.PRICE_DESC, limit=2, after=after)
        page = application.list_products(connection, catalogue, listing)
        pages += 1
        seen += [p.sku for p in page.items]
        if page.next_cursor is None:
            break
        after = application.read_cursor(page.next_cursor, Sort.PRICE_DESC)

    assert seen == ["KIT-4", "KIT-3", "KIT-2", "KIT-1", "KIT-0"]
    assert pages == 3


def test_a_full_last_page_has_no_cursor(connection: Connection, catalogue: MemoryProducts) -> None:
    for n in range(4):
        application.create_product(connection, catalogue, new_product(f"KIT-{n}"))

    first = application.list_products(connection, catalogue, Listing(sort=Sort.NAME, limit=4))

    assert len(first.items) == 4
    assert first.next_cursor is None


def test_the_seed_loads_once(connection: Connection) -> None:
    catalogue = MemoryProducts()
    seed = Seed(
        name="starter",
        categories=[Category("kitchen", "Kitchen")],
        products=[new_product("KIT-1"), new_product("KIT-2")],
    )

    assert application.seed_catalogue(connection, catalogue, seed) is True
    application.change_product(connection, catalogue, "KIT-1", {"price": 999})
    assert application.seed_catalogue(connection, catalogue, seed) is False

    assert sorted(catalogue.products) == ["KIT-1", "KIT-2"]
    assert catalogue.products["KIT-1"].price == 999


def test_the_shipped_seed_is_a_realistic_catalogue_in_euros(connection: Connection) -> None:
    seed = load_seed()
    catalogue = MemoryProducts()

    assert application.seed_catalogue(connection, catalogue, seed) is True

    products = list(catalogue.products.values())
    assert len(products) >= 50
    assert len({p.category for p in products}) >= 6
    assert all(p.currency == "EUR" for p in products)
    assert all(p.description and p.image_url for p in products)
    assert len({p.name for p in products}) == len(products)
    # Every category of the seed holds products: none is an empty shelf.
    assert all(c.product_count > 0 for c in catalogue.categories(connection))
