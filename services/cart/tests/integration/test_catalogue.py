"""The client of the catalog service, against a small HTTP stand-in for it: one batch call per
cart, and every way the catalogue can fail becomes a 503 problem for the shopper, a 404 to the
batch route too."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from agora.client import ServiceClient
from agora.errors import ServiceUnavailable
from agora_tools.fakes import FakeCatalog, product
from agora_tools.testing import assert_problem, database, free_port
from cart.adapters import HttpCatalogService
from cart.bootstrap import create_app
from cart.domain import Product
from cart.settings import CartSettings

from .conftest import KEY, WOK


@pytest.fixture
async def stand() -> AsyncIterator[FakeCatalog]:
    async with FakeCatalog(product(WOK), product("KIT-OLD", active=False)) as stand:
        yield stand


@pytest.fixture
async def catalogue(stand: FakeCatalog) -> AsyncIterator[HttpCatalogService]:
    client = ServiceClient({"catalog": [stand.url]}, timeout=2.0, attempts=1)
    await client.start()
    try:
        yield HttpCatalogService(client)
    finally:
        await client.close()


async def test_every_known_product_comes_in_one_call(
    catalogue: HttpCatalogService, stand: FakeCatalog
) -> None:
    found = await catalogue.products([WOK, "KIT-OLD", "NO-SUCH"])

    assert found == {
        WOK: Product(WOK, f"Product {WOK}", 1290, "EUR", True),
        "KIT-OLD": Product("KIT-OLD", "Product KIT-OLD", 1290, "EUR", False),
    }
    assert stand.calls == [f"/products/batch?sku={WOK}&sku=KIT-OLD&sku=NO-SUCH"]


async def test_no_skus_need_no_call(catalogue: HttpCatalogService, stand: FakeCatalog) -> None:
    assert await catalogue.products([]) == {}
    assert stand.calls == []


@pytest.mark.parametrize("sku", ["BOOM-500", "GARBLED"])
async def test_a_failing_or_unreadable_catalogue_is_unavailable(
    catalogue: HttpCatalogService, sku: str
) -> None:
    with pytest.raises(ServiceUnavailable):
        await catalogue.products([WOK, sku])


async def test_a_catalogue_that_answers_the_batch_route_404_is_unavailable(
    catalogue: HttpCatalogService, stand: FakeCatalog
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
    stand: FakeCatalog, tmp_path: Path
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
    assert_problem(read, 503)
    assert read.json()["detail"].startswith("the catalogue is unreachable")
