"""The catalog's HTTP routes: parse, run one handler, answer.

Reads are the hot path (a storefront opens products far more often than anyone changes them), so
the read routes run one query and serialize the answer once, straight to bytes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator
from pydantic.json_schema import SkipJsonSchema

from agora.cursor import REFUSED_CURSOR, TOKEN_MAX, PageOut, page_size
from agora.deps import Admin, Uow, provided
from agora.fields import WHOLE, WholeNumber
from agora.query import QueryParams, page_cursor, page_limit
from catalog import application
from catalog.application import CategorySummary, CreateProduct, Listing
from catalog.domain import (
    CURRENCIES,
    CURRENCY_PATTERN,
    DESCRIPTION_MAX,
    IMAGE_URL_MAX,
    NAME_MAX,
    PAGE_DEFAULT,
    PAGE_MAX,
    PRICE_MAX,
    SKU_PATTERN,
    SLUG_MAX,
    SLUG_PATTERN,
    Product,
    Sort,
    search_words,
)

JSON = "application/json"
# The most skus one batch lookup may name.
BATCH_MAX = 100

router = APIRouter(tags=["catalog"])

# The codes the catalogue prices in: ISO 4217's in circulation, named in the document.
CURRENCY: dict[str, Any] = {"enum": sorted(CURRENCIES)}
# How an image's address starts: a path on the shop's site, or http(s) in any case. The rest of
# ``check_image_url`` (a host, no spaces) no pattern states alike in every regex dialect.
ImageUrl = Annotated[
    str, Field(max_length=IMAGE_URL_MAX, pattern=r"^(?:/(?:[^/]|$)|[Hh][Tt][Tt][Pp][Ss]?://)")
]


Parts = Annotated[application.Parts, Depends(provided(application.Parts))]


class ProductOut(BaseModel):
    """A product as clients see it."""

    model_config = ConfigDict(from_attributes=True)

    sku: str
    name: str
    description: str
    price: int = Field(description="Price in minor units of `currency` (cents for EUR).")
    currency: str = Field(description="ISO 4217 code.")
    category: str = Field(description="Slug of the product's category.")
    image_url: str | None
    active: bool
    created_at: datetime
    updated_at: datetime


class ProductPage(PageOut[ProductOut]):
    pass


class ProductBatch(BaseModel):
    items: list[ProductOut] = Field(
        description="The products asked for that exist, active or not, in the order asked."
    )


class CategoryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    slug: str
    name: str
    product_count: int = Field(description="How many active products the category holds.")


class NewProduct(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    sku: str = Field(pattern=SKU_PATTERN, description="Upper-case letters, digits and '-'.")
    name: str = Field(min_length=1, max_length=NAME_MAX)
    description: str = Field(max_length=DESCRIPTION_MAX)
    price: WholeNumber = Field(gt=0, le=PRICE_MAX, description="Minor units of `currency`.")
    currency: str = Field(
        pattern=CURRENCY_PATTERN, description="ISO 4217 code in use.", json_schema_extra=CURRENCY
    )
    category: str = Field(pattern=SLUG_PATTERN, max_length=SLUG_MAX)
    image_url: ImageUrl | None = Field(
        default=None,
        description="An http(s) URL, or a path on the shop's site such as /static/products/X.svg.",
    )


class ProductChanges(BaseModel):
    """The fields to change; those left out keep their values. The sku cannot change.

    Only `image_url` may be null (the product then has no image); the others are left out to
    keep their values, and a null is refused.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    # ``SkipJsonSchema[None]``: absent is None here, but the document admits no null.
    name: Annotated[str, Field(min_length=1, max_length=NAME_MAX)] | SkipJsonSchema[None] = None
    description: Annotated[str, Field(max_length=DESCRIPTION_MAX)] | SkipJsonSchema[None] = None
    price: Annotated[int, Field(gt=0, le=PRICE_MAX), WHOLE] | SkipJsonSchema[None] = None
    currency: (
        Annotated[str, Field(pattern=CURRENCY_PATTERN, json_schema_extra=CURRENCY)]
        | SkipJsonSchema[None]
    ) = None
    category: (
        Annotated[str, Field(pattern=SLUG_PATTERN, max_length=SLUG_MAX)] | SkipJsonSchema[None]
    ) = None
    image_url: ImageUrl | None = None
    active: bool | SkipJsonSchema[None] = Field(
        default=None, description="false hides it from listings."
    )

    @field_validator("name", "description", "price", "currency", "category", "active")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Runs only on a value the client sent: a field left out keeps its default.
        if value is None:
            raise ValueError("leave the field out to keep its value; it cannot be null")
        return value


class ListQuery(QueryParams):
    """The listing's query string. An empty value (``?q=``) means the parameter is not given."""

    category: str | None = Field(
        default=None,
        max_length=SLUG_MAX,
        description="Slug of a category; an unknown one gives an empty list, not an error.",
    )
    q: str | None = Field(
        default=None,
        max_length=200,
        description="Search words; each must occur in the name or description (any case).",
    )
    sort: Sort = Sort.NAME
    limit: int = page_limit(PAGE_DEFAULT, PAGE_MAX)
    # A cursor holds a product's name: up to 200 characters, in any script.
    cursor: str | None = page_cursor(TOKEN_MAX)


_PRODUCT = TypeAdapter(ProductOut)
_PAGE = TypeAdapter(ProductPage)
_BATCH = TypeAdapter(ProductBatch)
_CATEGORIES = TypeAdapter(list[CategoryOut])


def _json(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def _product(product: Product, status: int = 200) -> Response:
    body = _PRODUCT.dump_json(ProductOut.model_validate(product))
    headers = {"Location": f"/products/{product.sku}"} if status == 201 else None
    return _json(body, status, headers)


@router.get("/products", response_model=ProductPage, responses=REFUSED_CURSOR)
async def list_products(query: Annotated[ListQuery, Query()], uow: Uow, parts: Parts) -> Response:
    """Active products, one page at a time, in a stable order (keyset paging)."""
    listing = Listing(
        sort=query.sort,
        limit=page_size(query.limit, PAGE_MAX),
        category=query.category,
        words=search_words(query.q),
        after=application.read_cursor(query.cursor, query.sort) if query.cursor else None,
    )
    page = await uow.query(application.list_products, parts.products, listing)
    return _json(_PAGE.dump_json(ProductPage.of(page, ProductOut.model_validate)))


# Declared before ``/products/{sku}``: "batch" is no sku (skus are upper case).
@router.get("/products/batch", response_model=ProductBatch)
async def get_products(
    sku: Annotated[
        list[str],
        Query(
            min_length=1,
            max_length=BATCH_MAX,
            description="A sku; repeat the parameter for more (up to 100).",
        ),
    ],
    uow: Uow,
    parts: Parts,
) -> Response:
    """Several products by sku in one call, also inactive ones (their `active` says so).

    Unknown skus are left out of `items` rather than answered 404.
    """
    found = await uow.query(application.get_products, parts.products, sku)
    items = [ProductOut.model_validate(product) for product in found]
    return _json(_BATCH.dump_json(ProductBatch(items=items)))


@router.get("/products/{sku}", response_model=ProductOut)
async def get_product(sku: str, uow: Uow, parts: Parts) -> Response:
    """One product by sku, also when it is inactive (its `active` says so)."""
    return _product(await uow.query(application.get_product, parts.products, sku))


@router.post("/products", status_code=201, response_model=ProductOut)
async def create_product(body: NewProduct, uow: Uow, parts: Parts, _admin: Admin) -> Response:
    """Add a product (admin only). It starts active."""
    command = CreateProduct(**body.model_dump())
    return _product(await uow.run(application.create_product, parts.products, command), 201)


@router.patch("/products/{sku}", response_model=ProductOut)
async def change_product(
    sku: str, body: ProductChanges, uow: Uow, parts: Parts, _admin: Admin
) -> Response:
    """Change any of a product's fields but its sku (admin only); `active: false` hides it."""
    changes = body.model_dump(exclude_unset=True)
    return _product(await uow.run(application.change_product, parts.products, sku, changes))


@router.get("/categories", response_model=list[CategoryOut])
async def list_categories(uow: Uow, parts: Parts) -> Response:
    """Every category, by name, with how many active products it holds."""
    found: list[CategorySummary] = await uow.query(application.list_categories, parts.products)
    return _json(_CATEGORIES.dump_json([CategoryOut.model_validate(c) for c in found]))
