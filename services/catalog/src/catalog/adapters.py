"""Storage of the catalogue in SQL (SQLite or PostgreSQL), and the seed file shipped with it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from importlib import resources
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Connection,
    ForeignKey,
    Index,
    MetaData,
    Row,
    String,
    Table,
    Text,
    bindparam,
    func,
    select,
    tuple_,
)
from sqlalchemy.exc import IntegrityError

from agora.columns import key_text, timestamp
from agora.db import aware
from agora.sql import insert_if_absent, rowcount
from catalog.application import CategorySummary, CreateProduct, Listing, Seed
from catalog.domain import NAME_MAX, Category, Product, ProductExists, name_key, search_text

metadata = MetaData()


categories = Table(
    "categories",
    metadata,
    Column("slug", String(64), primary_key=True),
    Column("name", String(100), nullable=False),
)

products = Table(
    "products",
    metadata,
    Column("sku", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column(
        "category",
        String(64),
        ForeignKey("categories.slug", name="fk_products_category"),
        nullable=False,
    ),
    Column("image_url", String(2048), nullable=True),
    Column("active", Boolean, nullable=False),
    timestamp("created_at"),
    timestamp("updated_at"),
    # Derived from name and description on every write (domain.name_key, domain.search_text).
    # Case folding may triple a name's length ("ﬃ" → "ffi"): migration 0003.
    Column("name_key", key_text(3 * NAME_MAX), nullable=False),
    Column("search_text", Text, nullable=False),
    CheckConstraint("price > 0", name="ck_products_price_positive"),
    Index("ix_products_name_key", "name_key", "sku"),
    Index("ix_products_price", "price", "sku"),
    Index("ix_products_category_name_key", "category", "name_key", "sku"),
    Index("ix_products_category_price", "category", "price", "sku"),
)

seeds = Table(
    "seeds",
    metadata,
    Column("name", String(100), primary_key=True),
    timestamp("applied_at"),
)

PRODUCT_COLUMNS = (
    products.c.sku,
    products.c.name,
    products.c.description,
    products.c.price,
    products.c.currency,
    products.c.category,
    products.c.image_url,
    products.c.active,
    products.c.created_at,
    products.c.updated_at,
)
_BY_SKU = select(*PRODUCT_COLUMNS).where(products.c.sku == bindparam("sku"))


def _product(row: Row[*tuple[Any, ...]]) -> Product:
    fields = row._asdict()
    fields["created_at"] = aware(fields["created_at"])
    fields["updated_at"] = aware(fields["updated_at"])
    return Product(**fields)


def _values(product: Product) -> dict[str, Any]:
    """A product's columns but its key, with the sort and search columns derived from it."""
    values = asdict(product)
    del values["sku"]
    values["name_key"] = name_key(product.name)
    values["search_text"] = search_text(product.name, product.description)
    return values


class SqlProducts:
    """The :class:`catalog.application.Products` port in the service's database."""

    def get(self, connection: Connection, sku: str, *, for_update: bool = False) -> Product | None:
        statement = _BY_SKU.with_for_update() if for_update else _BY_SKU
        row = connection.execute(statement, {"sku": sku}).first()
        return None if row is None else _product(row)

    def many(self, connection: Connection, skus: Sequence[str]) -> list[Product]:
        if not skus:
            return []
        statement = select(*PRODUCT_COLUMNS).where(products.c.sku.in_(skus))
        return [_product(row) for row in connection.execute(statement)]

    def add(self, connection: Connection, product: Product) -> None:
        try:
            connection.execute(products.insert().values(sku=product.sku, **_values(product)))
        except IntegrityError as error:
            # Two admins creating one sku at the same moment: the second insert loses.
            raise ProductExists(f"a product with sku {product.sku!r} already exists") from error

    def save(self, connection: Connection, product: Product) -> None:
        connection.execute(
            products.update().where(products.c.sku == product.sku).values(**_values(product))
        )

    def has_category(self, connection: Connection, slug: str) -> bool:
        found = connection.execute(
            select(categories.c.slug).where(categories.c.slug == slug)
        ).first()
        return found is not None

    def add_category(self, connection: Connection, category: Category) -> None:
        connection.execute(categories.insert().values(slug=category.slug, name=category.name))

    def categories(self, connection: Connection) -> list[CategorySummary]:
        count = func.count(products.c.sku)
        statement = (
            select(categories.c.slug, categories.c.name, count)
            .select_from(
                categories.outerjoin(
                    products,
                    (products.c.category == categories.c.slug) & products.c.active.is_(True),
                )
            )
            .group_by(categories.c.slug, categories.c.name)
            .order_by(categories.c.name, categories.c.slug)
        )
        return [
            CategorySummary(slug=slug, name=name, product_count=n)
            for slug, name, n in connection.execute(statement)
        ]

    def listing(self, connection: Connection, listing: Listing, limit: int) -> list[Product]:
        key = products.c.price if listing.sort.by_price else products.c.name_key
        statement = select(*PRODUCT_COLUMNS).where(products.c.active.is_(True))
        if listing.category is not None:
            statement = statement.where(products.c.category == listing.category)
        for word in listing.words:
            statement = statement.where(products.c.search_text.contains(word, autoescape=True))
        if listing.after is not None:
            position = tuple_(key, products.c.sku)
            after = tuple_(listing.after.key, listing.after.sku)
            statement = statement.where(
                position < after if listing.sort.descending else position > after
            )
        if listing.sort.descending:
            statement = statement.order_by(key.desc(), products.c.sku.desc())
        else:
            statement = statement.order_by(key.asc(), products.c.sku.asc())
        rows = connection.execute(statement.limit(limit))
        return [_product(row) for row in rows]

    def claim_seed(self, connection: Connection, name: str, now: datetime) -> bool:
        claim = insert_if_absent(connection, seeds).values(name=name, applied_at=now)
        return rowcount(connection.execute(claim)) == 1


def load_seed(name: str = "seed.json") -> Seed:
    """The starting catalogue shipped inside the package (``catalog/seed.json``)."""
    document = json.loads(resources.files("catalog").joinpath(name).read_text("utf-8"))
    return Seed(
        name=document["name"],
        categories=[Category.create(c["slug"], c["name"]) for c in document["categories"]],
        products=[CreateProduct(**entry) for entry in document["products"]],
    )
