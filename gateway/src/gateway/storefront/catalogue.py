"""The catalogue's pages: the products (searched, filtered by category, sorted, paged), the
categories, a product, and a product's placeholder image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.responses import Response

from contracts.api import QUANTITY_MAX
from gateway.storefront import images
from gateway.storefront.client import (
    CATALOGUE,
    Anonymous,
    Services,
    ServicesClient,
    read,
    segment,
)
from gateway.storefront.common import (
    MaybeUser,
    Settings,
    bad_listing,
    header_count,
    paged,
    together,
)
from gateway.storefront.models import Category, Page, Product
from gateway.web import PageNotFound, Unavailable, page_router, render

SORTS = {"name": "Name", "price": "Price: low to high", "-price": "Price: high to low"}


@dataclass(frozen=True, slots=True)
class Filters:
    """What the products are listed by: words (spaces collapsed, at most 200 characters), a
    category, an order (one of :data:`SORTS`, else the catalogue's own), and the page."""

    q: str
    category: str
    sort: str
    cursor: str

    def params(self, page_size: int) -> dict[str, str]:
        """The catalogue's query for these filters."""
        params = {"limit": str(page_size)}
        for name, value in (("q", self.q), ("category", self.category), ("cursor", self.cursor)):
            if value:
                params[name] = value
        if self.sort in SORTS:
            params["sort"] = self.sort
        return params

    def here(self) -> dict[str, str]:
        """The filters as the address of their first page has them."""
        chosen = (("q", self.q), ("category", self.category), ("sort", self.sort))
        return {name: value for name, value in chosen if value}


async def _filters(q: str = "", category: str = "", sort: str = "", cursor: str = "") -> Filters:
    return Filters(" ".join(q.split())[:200], category, sort, cursor)


router = page_router()


@router.get("/")
async def home(
    request: Request,
    user: MaybeUser,
    services: Services,
    settings: Settings,
    filters: Annotated[Filters, Depends(_filters)],
) -> Response:
    found, categories, _ = await together(
        services.get(
            Page[Product],
            "catalog",
            "/products",
            what=CATALOGUE,
            params=filters.params(settings.storefront_page_size),
            refused=(400, 422),
            refusal=bad_listing(),
        ),
        _categories(services),
        header_count(request, services),
    )
    category, sort, here = filters.category, filters.sort, filters.here()
    chosen = next((c for c in categories if c.slug == category), None)
    return render(
        request,
        "storefront/home.html",
        {
            "products": found.items,
            "categories": categories,
            "category": category,
            "category_name": chosen.name if chosen else category,
            "search_q": filters.q,
            "sort": sort if sort in SORTS else "",
            "sorts": SORTS,
            "paged": bool(filters.cursor),
            "first_page": "/?" + urlencode(here) if here else "/",
            "next_page": paged("/", here, found.next_cursor),
        },
    )


@router.get("/categories")
async def categories(request: Request, user: MaybeUser, services: Services) -> Response:
    found, _ = await together(services.categories(), header_count(request, services))
    return render(request, "storefront/categories.html", {"categories": found})


@router.get("/products/{sku}")
async def product(request: Request, sku: str, user: MaybeUser, services: Services) -> Response:
    return await product_page(request, services, sku)


@router.get("/products/{sku}/image.svg")
async def product_image(request: Request, sku: str, services: Anonymous) -> Response:
    # Asked on nobody's behalf: the image is the same for everyone, and cached as such.
    name = ""
    try:
        reply = await services.call("catalog", "GET", f"/products/{segment(sku)}", what=CATALOGUE)
    except Unavailable:
        reply = None  # the catalogue is away: the sku's letters will do
    if reply is not None:
        if reply.status == 404:
            return Response("no such product", status_code=404, media_type="text/plain")
        if reply.status == 200:
            name = read(Product, reply, CATALOGUE).name
    svg = images.placeholder(sku, name)
    tag = images.etag(svg)
    # Made from the catalogue's name only when it answered: then a day in caches is fine.
    cache = "public, max-age=86400" if name else "no-cache"
    headers = {"ETag": tag, "Cache-Control": cache}
    if request.headers.get("if-none-match") == tag:
        return Response(status_code=304, headers=headers)
    return Response(svg, media_type="image/svg+xml", headers=headers)


async def product_page(
    request: Request,
    services: ServicesClient,
    sku: str,
    *,
    error: str | None = None,
    status: int = 200,
) -> Response:
    """A product's page; also the answer of a form about it that could not be done."""
    found, stock, _ = await together(
        services.get(
            Product,
            "catalog",
            f"/products/{segment(sku)}",
            what=CATALOGUE,
            refused=(400, 404, 422),
            refusal=PageNotFound("There is no such product in the shop."),
        ),
        services.stock(sku),
        header_count(request, services),
    )
    return render(
        request,
        "storefront/product.html",
        {
            "product": found,
            "stock": stock,
            "error": error,
            "quantity_max": QUANTITY_MAX,
        },
        status=status,
    )


async def _categories(services: ServicesClient) -> list[Category]:
    """The categories for the filter; none when the catalogue does not answer them (the
    products may still be listed)."""
    try:
        return await services.categories()
    except Unavailable:
        return []
