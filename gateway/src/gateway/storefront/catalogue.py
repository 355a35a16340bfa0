"""The catalogue's pages: the products (searched, filtered by category, sorted, paged), the
categories, a product, and a product's placeholder image."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Request
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
from gateway.storefront.common import MaybeUser, Settings, header_count, listing, paged, together
from gateway.storefront.models import Category, Page, Product
from gateway.web import PageNotFound, Unavailable, page_router, render

SORTS = {"name": "Name", "price": "Price: low to high", "-price": "Price: high to low"}

router = page_router()


@router.get("/")
async def home(
    request: Request,
    user: MaybeUser,
    services: Services,
    settings: Settings,
    q: str = "",
    category: str = "",
    sort: str = "",
    cursor: str = "",
) -> Response:
    q = " ".join(q.split())[:200]
    params = {"limit": str(settings.storefront_page_size)}
    for name, value in (("q", q), ("category", category), ("cursor", cursor)):
        if value:
            params[name] = value
    if sort in SORTS:
        params["sort"] = sort
    found, categories, _ = await together(
        listing(services, Page[Product], "catalog", "/products", what=CATALOGUE, params=params),
        _categories(services),
        header_count(request, services),
    )
    here = {k: v for k, v in (("q", q), ("category", category), ("sort", sort)) if v}
    chosen = next((c for c in categories if c.slug == category), None)
    return render(
        request,
        "storefront/home.html",
        {
            "products": found.items,
            "categories": categories,
            "category": category,
            "category_name": chosen.name if chosen else category,
            "search_q": q,
            "sort": sort if sort in SORTS else "",
            "sorts": SORTS,
            "paged": bool(cursor),
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
    reply, stock, _ = await together(
        services.call("catalog", "GET", f"/products/{segment(sku)}", what=CATALOGUE),
        services.stock(sku),
        header_count(request, services),
    )
    if reply.status in (400, 404, 422):
        raise PageNotFound("There is no such product in the shop.")
    if reply.status != 200:
        raise Unavailable(CATALOGUE)
    return render(
        request,
        "storefront/product.html",
        {
            "product": read(Product, reply, CATALOGUE),
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
