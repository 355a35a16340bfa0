"""The client of the catalog service, against a small HTTP stand-in for it: one batch call per
cart, and every way the catalogue can fail becomes a 503 problem for the shopper, a 404 to the
batch route too."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from agora.client import ServiceClient
from agora.errors import ServiceUnavailable
from agora_tools.testing import database, free_port
from cart.adapters import HttpCatalogService
from cart.bootstrap import create_app
from cart.domain import Product
from cart.settings import CartSettings

from .conftest import KEY, PROBLEM, WOK


def product(sku: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "sku": sku,
        "name": f"Product {sku}",
        "description": "",
        "price": 1290,
        "currency": "EUR",
        "category": "kitchen",
        "image_url": None,
        "active": True,
        "created_at": "2026-11-24T12:00:00Z",
        "updated_at": "2026-11-24T12:00:00Z",
    }
    body.update(overrides)
    return body


class Stand:
    """The catalog service's product routes on a local port."""

    def __init__(self) -> None:
        self.products = {WOK: product(WOK), "KIT-OLD": product("KIT-OLD", active=False)}
        self.calls: list[str] = []
        # False: the batch route answers 404, as a callee that is no catalog would.
        self.batch = True
        self.url = ""
        self.runner: web.AppRunner | None = None

    async def get_products(self, request: web.Request) -> web.Response:
        self.calls.append(request.path_qs)
        if not self.batch:
            return web.json_response({"title": "Not found"}, status=404)
        skus = request.query.getall("sku")
        if "BOOM-500" in skus:
            return web.json_response({"title": "Internal error"}, status=500)
        if "GARBLED" in skus:
            return web.json_response({"items": [{"sku": "GARBLED"}]})
        return web.json_response({"items": [self.products[s] for s in skus if s in self.products]})

    async def get_product(self, request: web.Request) -> web.Response:
        self.calls.append(request.path_qs)
        found = self.products.get(request.match_info["sku"])
        if found is None:
            return web.json_response({"title": "Not found"}, status=404)
        return web.json_response(found)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/products/batch", self.get_products)
        app.router.add_get("/products/{sku}", self.get_product)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def stand() -> AsyncIterator[Stand]:
    stand = Stand()
    await stand.start()
    try:
        yield stand
    finally:
        await stand.stop()


@pytest.fixture
async def catalogue(stand: Stand) -> AsyncIterator[HttpCatalogService]:
    client = ServiceClient({"catalog": [stand.url]}, timeout=2.0, attempts=1)
    await client.start()
    try:
        yield HttpCatalogService(client)
    finally:
        await client.close()


async def test_every_known_product_comes_in_one_call(
    catalogue: HttpCatalogService, stand: Stand
) -> None:
    found = await catalogue.products([WOK, "KIT-OLD", "NO-SUCH"])

    assert found == {
        WOK: Product(WOK, f"Product {WOK}", 1290, "EUR", True),
        "KIT-OLD": Product("KIT-OLD", "Product KIT-OLD", 1290, "EUR", False),
    }
    assert stand.calls == [f"/products/batch?sku={WOK}&sku=KIT-OLD&sku=NO-SUCH"]


async def test_no_skus_need_no_call(catalogue: HttpCatalogService, stand: Stand) -> None:
    assert await catalogue.products([]) == {}
    assert stand.calls == []


@pytest.mark.parametrize("sku", ["BOOM-500", "GARBLED"])
async def test_a_failing_or_unreadable_catalogue_is_unavailable(
    catalogue: HttpCatalogService, sku: str
) -> None:
    with pytest.raises(ServiceUnavailable):
        await catalogue.products([WOK, sku])


async def test_a_catalogue_that_answers_the_batch_route_404_is_unavailable(
    catalogue: HttpCatalogService, stand: Stand
) -> None:
    stand.batch = False

    with pytest.raises(ServiceUnavailable, match="answered 404"):
        await catalogue.products([WOK, "KIT-OLD"])
    # Not asked again sku by sku, as if the products were what the callee did not know.
    assert stand.calls == [f"/products/batch?sku={WOK}&sku=KIT-OLD"]


async def test_an_unreachable_catalogue_is_unavailable() -> None:
    client = ServiceClient({"catalog": [f"http://127.0.0.1:{free_port()}"]}, attempts=1)
    await client.start()
    try:
        with pytest.raises(ServiceUnavailable) as refused:
            await HttpCatalogService(client).products([WOK])
    finally:
        await client.close()

    assert "unreachable" in str(refused.value)


async def test_a_shopper_whose_catalogue_goes_away_gets_a_503_problem(
    stand: Stand, tmp_path: Path
) -> None:
    with database("sqlite", "cart", tmp_path) as url:
        settings = CartSettings(
            database_url=url,
            data_dir=tmp_path,
            log_level="warning",
            service_urls={"catalog": [stand.url]},
        )
        app = create_app(settings, verifier=KEY.verifier())
        headers = KEY.bearer(["customer"])
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://cart"
            ) as http,
        ):
            put = await http.put(f"/cart/items/{WOK}", json={"quantity": 2}, headers=headers)
            await stand.stop()
            read = await http.get("/cart", headers=headers)

    assert put.status_code == 200
    assert put.json()["total"] == 2580
    assert read.status_code == 503
    assert read.headers["content-type"] == PROBLEM
    assert read.json()["detail"].startswith("the catalogue is unreachable")
