"""The clients of catalog, payments and cart, against small HTTP stand-ins for them: what each
answer of theirs becomes for orders."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from agora import context
from agora.client import ServiceClient
from agora.errors import ServiceUnavailable
from agora_tools.fakes import FakeCatalog, product
from agora_tools.testing import free_port
from orders.adapters import HttpCartService, HttpCatalogService, HttpPaymentsService
from orders.domain import Card, InvalidCard, Priced, Requested

REFUSED = "4000000000000002"


class Stand(FakeCatalog):
    """Catalog, payments and cart on one local port."""

    def __init__(self) -> None:
        super().__init__(product("KIT-A"), product("KIT-OLD", active=False))
        self.authorization: str | None = None
        # What GET /cart answers: (status, body).
        self.cart: tuple[int, Any] = (200, {"items": [], "total": 0, "currency": "EUR"})
        self.app.router.add_post("/payments/cards", self.tokenize)
        self.app.router.add_get("/cart", self.get_cart)

    async def tokenize(self, request: web.Request) -> web.Response:
        self.authorization = request.headers.get("Authorization")
        number = (await request.json())["card_number"]
        if number == REFUSED:
            # A careless answer that repeats what it was sent.
            return web.json_response({"title": "Invalid", "detail": number}, status=422)
        return web.json_response(
            {"token": "tok_1", "brand": "mastercard", "last4": number[-4:]}, status=201
        )

    async def get_cart(self, request: web.Request) -> web.Response:
        self.authorization = request.headers.get("Authorization")
        status, body = self.cart
        return web.json_response(body, status=status)


@pytest.fixture
async def stand() -> AsyncIterator[Stand]:
    async with Stand() as stand:
        yield stand


@pytest.fixture
async def service_client(stand: Stand) -> AsyncIterator[ServiceClient]:
    services = {"catalog": [stand.url], "payments": [stand.url], "cart": [stand.url]}
    client = ServiceClient(services, timeout=2.0, attempts=1)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


KNOWN = {
    "KIT-A": Priced("KIT-A", "Product KIT-A", 1290, "EUR", True),
    "KIT-OLD": Priced("KIT-OLD", "Product KIT-OLD", 1290, "EUR", False),
}


async def test_prices_come_for_every_known_sku_in_one_call(
    service_client: ServiceClient, stand: Stand
) -> None:
    prices = await HttpCatalogService(service_client).prices(["KIT-A", "KIT-OLD", "NO-SUCH"])

    assert prices == KNOWN
    assert stand.calls == ["/products/batch?sku=KIT-A&sku=KIT-OLD&sku=NO-SUCH"]


async def test_a_catalogue_that_answers_the_batch_route_404_is_unavailable(
    service_client: ServiceClient, stand: Stand
) -> None:
    stand.batch = False

    with pytest.raises(ServiceUnavailable, match="answered 404"):
        await HttpCatalogService(service_client).prices(["KIT-A", "KIT-OLD"])
    # Not asked again sku by sku, as if the products were what the callee did not know.
    assert stand.calls == ["/products/batch?sku=KIT-A&sku=KIT-OLD"]


@pytest.mark.parametrize("batch", [True, False])
async def test_a_failing_catalogue_is_unavailable(
    service_client: ServiceClient, stand: Stand, batch: bool
) -> None:
    stand.batch = batch
    with pytest.raises(ServiceUnavailable):
        await HttpCatalogService(service_client).prices(["KIT-A", "BOOM-500"])


async def test_an_unreadable_batch_is_unavailable(service_client: ServiceClient) -> None:
    with pytest.raises(ServiceUnavailable):
        await HttpCatalogService(service_client).prices(["GARBLED"])


async def test_an_unreachable_catalogue_or_payments_is_unavailable() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    client = ServiceClient({"catalog": [nowhere], "payments": [nowhere]}, timeout=1.0, attempts=1)
    await client.start()
    try:
        with pytest.raises(ServiceUnavailable):
            await HttpCatalogService(client).prices(["KIT-A"])
        with pytest.raises(ServiceUnavailable):
            await HttpPaymentsService(client).tokenize("4242424242424242")
    finally:
        await client.close()


async def test_a_card_is_tokenized_on_the_shoppers_behalf(
    service_client: ServiceClient, stand: Stand
) -> None:
    token = context.bearer_token.set("shopper-token")
    try:
        card = await HttpPaymentsService(service_client).tokenize("5555555555554444")
    finally:
        context.bearer_token.reset(token)

    assert card == Card(token="tok_1", brand="mastercard", last4="4444")
    assert stand.authorization == "Bearer shopper-token"


async def test_a_card_payments_refuses_is_invalid_without_its_number(
    service_client: ServiceClient,
) -> None:
    with pytest.raises(InvalidCard) as refused:
        await HttpPaymentsService(service_client).tokenize(REFUSED)

    assert REFUSED not in str(refused.value)


def cart_item(sku: str, quantity: int) -> dict[str, Any]:
    return {"sku": sku, "name": sku, "quantity": quantity, "unit_price": 990, "line_total": 990}


async def test_the_cart_is_read_on_the_shoppers_behalf(
    service_client: ServiceClient, stand: Stand
) -> None:
    stand.cart = (200, {"items": [cart_item("KIT-A", 2), cart_item("KIT-B", 1)], "total": 0})
    token = context.bearer_token.set("shopper-token")
    try:
        lines = await HttpCartService(service_client).lines()
    finally:
        context.bearer_token.reset(token)

    assert lines == [Requested("KIT-A", 2), Requested("KIT-B", 1)]
    assert stand.authorization == "Bearer shopper-token"


@pytest.mark.parametrize(
    "answer", [(500, {"title": "Internal error"}), (200, {"items": [{"sku": "KIT-A"}]}), (200, [])]
)
async def test_a_failing_or_unreadable_cart_is_unavailable(
    service_client: ServiceClient, stand: Stand, answer: tuple[int, Any]
) -> None:
    stand.cart = answer
    with pytest.raises(ServiceUnavailable):
        await HttpCartService(service_client).lines()
