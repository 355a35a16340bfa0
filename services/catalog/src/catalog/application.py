"""The catalogue's use cases: one transaction each, over the :class:`Products` port.

Handlers are plain functions ``handler(connection, products, ...)`` that the unit of work runs:
``products`` keeps the catalogue within that transaction (the SQL one in production, an in-memory
one in unit tests), so this module names no table and no concrete adapter. Bootstrap chooses it and
hands it to the entry points in :class:`Parts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Connection

from agora.cursor import CursorCodec, InvalidCursor, Page, paged
from agora.messaging.outbox import record
from catalog.domain import (
    CHECKS,
    Category,
    Cursor,
    Product,
    ProductExists,
    ProductNotFound,
    Sort,
    UnknownCategory,
)
from contracts.catalog import ProductCreated, ProductUpdated


@dataclass(frozen=True, slots=True)
class CategorySummary:
    slug: str
    name: str
    product_count: int


@dataclass(frozen=True, slots=True)
class Listing:
    """A request for one page of active products."""

    sort: Sort
    limit: int
    category: str | None = None
    words: tuple[str, ...] = ()
    after: Cursor | None = None


@dataclass(frozen=True, slots=True)
class CreateProduct:
    sku: str
    name: str
    description: str
    price: int
    currency: str
    category: str
    image_url: str | None = None


@dataclass(frozen=True, slots=True)
class Seed:
    """A starting catalogue, loaded once into an empty database."""

    name: str
    categories: Sequence[Category]
    products: Sequence[CreateProduct]


class Products(Protocol):
    """The catalogue's products and their categories, within the transaction of ``connection``."""

    def get(
        self, connection: Connection, sku: str, *, for_update: bool = False
    ) -> Product | None: ...

    def many(self, connection: Connection, skus: Sequence[str]) -> list[Product]:
        """The products of ``skus`` that exist, active or not, in no particular order."""

    def add(self, connection: Connection, product: Product) -> None:
        """Store a new product; :class:`ProductExists` when its sku is taken."""

    def save(self, connection: Connection, product: Product) -> None: ...

    def has_category(self, connection: Connection, slug: str) -> bool: ...

    def add_category(self, connection: Connection, category: Category) -> None: ...

    def categories(self, connection: Connection) -> list[CategorySummary]:
        """Every category with the number of its active products, by name."""

    def listing(self, connection: Connection, listing: Listing, limit: int) -> list[Product]:
        """Up to ``limit`` active products matching ``listing``, in its order, after its cursor."""

    def claim_seed(self, connection: Connection, name: str, now: datetime) -> bool:
        """Record that seed ``name`` is loaded; False when it was already (or is being) loaded."""


@dataclass(frozen=True, slots=True)
class Parts:
    """What bootstrap chooses for the routes and the start-up seed."""

    products: Products


CURSORS = CursorCodec(Cursor)


def get_product(connection: Connection, products: Products, sku: str) -> Product:
    product = products.get(connection, sku)
    if product is None:
        raise ProductNotFound(f"there is no product with sku {sku!r}")
    return product


def get_products(connection: Connection, products: Products, skus: Sequence[str]) -> list[Product]:
    """The products of ``skus`` that exist (active or not), in the order asked; unknown skus and
    repeats are left out."""
    wanted = list(dict.fromkeys(skus))
    found = {product.sku: product for product in products.many(connection, wanted)}
    return [found[sku] for sku in wanted if sku in found]


def list_products(connection: Connection, products: Products, listing: Listing) -> Page[Product]:
    rows = products.listing(connection, listing, listing.limit + 1)
    return paged(CURSORS, rows, listing.limit, lambda last: Cursor.after(last, listing.sort))


def read_cursor(token: str, sort: Sort) -> Cursor:
    """The cursor in ``token``, which must have been handed out by a listing in ``sort`` order."""
    cursor = CURSORS.decode(token)
    if cursor.sort != sort:
        raise InvalidCursor(
            f"the cursor belongs to a listing sorted by {cursor.sort.value!r}, not {sort.value!r}"
        )
    return cursor


def list_categories(connection: Connection, products: Products) -> list[CategorySummary]:
    return products.categories(connection)


def create_product(connection: Connection, products: Products, command: CreateProduct) -> Product:
    product = _new_product(command, _now())
    if not products.has_category(connection, product.category):
        raise UnknownCategory(f"there is no category {product.category!r}")
    if products.get(connection, product.sku) is not None:
        raise ProductExists(f"a product with sku {product.sku!r} already exists")
    products.add(connection, product)
    record(connection, ProductCreated(**_state(product)), aggregate=product.sku)
    return product


def change_product(
    connection: Connection, products: Products, sku: str, changes: dict[str, Any]
) -> Product:
    """Apply ``changes``: any of name, description, price, currency, category, image_url, active."""
    product = products.get(connection, sku, for_update=True)
    if product is None:
        raise ProductNotFound(f"there is no product with sku {sku!r}")
    changed = product.change(changes, now=_now())
    if changed.category != product.category and not products.has_category(
        connection, changed.category
    ):
        raise UnknownCategory(f"there is no category {changed.category!r}")
    if changed is not product:
        products.save(connection, changed)
        fields = tuple(f for f in CHECKS if getattr(changed, f) != getattr(product, f))
        record(connection, ProductUpdated(**_state(changed), changed=fields), aggregate=changed.sku)
    return changed


def _state(product: Product) -> dict[str, Any]:
    """The product as the events carry it: every field it has."""
    return asdict(product)


def _new_product(command: CreateProduct, now: datetime) -> Product:
    return Product.create(**asdict(command), now=now)


def seed_catalogue(connection: Connection, products: Products, seed: Seed) -> bool:
    """Load ``seed`` unless it was loaded before; True when this call loaded it.

    Safe when replicas start together: the claim is a row insert that only one transaction can
    make, and the others wait for it and then find the seed recorded.
    """
    now = _now()
    if not products.claim_seed(connection, seed.name, now):
        return False
    for category in seed.categories:
        if not products.has_category(connection, category.slug):
            products.add_category(connection, category)
    for command in seed.products:
        product = _new_product(command, now)
        if not products.has_category(connection, product.category):
            raise UnknownCategory(f"the seed's product {product.sku} names no seeded category")
        if products.get(connection, product.sku) is None:
            products.add(connection, product)
            record(connection, ProductCreated(**_state(product)), aggregate=product.sku)
    return True


def _now() -> datetime:
    return datetime.now(UTC)
