"""Stand-ins for the services' HTTP APIs, for the tests of one service's client of another: each
answers on a local port as the service does, and records what it was asked.

Services keep their own clients of each other (they share no code for them), but the clients
must behave alike; testing them against one stand-in keeps them answering the same service.
"""

from __future__ import annotations

from typing import Any, Self

from aiohttp import web

from agora_tools.testing import free_port


class FakeService:
    """An aiohttp app on a free port of this machine, from :meth:`start` (or entering it as an
    async context manager) to :meth:`stop`; subclasses add its routes to :attr:`app`."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        """Stop answering (a service that went away); nothing the second time."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def product(sku: str, **overrides: Any) -> dict[str, Any]:
    """A product as catalog's API answers it, with ``overrides`` (``active=False``)."""
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


class FakeCatalog(FakeService):
    """The catalog service's product routes, ``GET /products/batch?sku=...`` and
    ``GET /products/{sku}``, over :attr:`products` (by sku), recording each request's path and
    query in :attr:`calls`.

    Asked for :attr:`BROKEN` it answers 500; the batch answers :attr:`GARBLED` as a product
    without its fields. With :attr:`batch` false, the batch route answers 404, as a callee that
    is no catalog would.
    """

    BROKEN = "BOOM-500"
    GARBLED = "GARBLED"

    def __init__(self, *products: dict[str, Any]) -> None:
        super().__init__()
        self.products = {found["sku"]: found for found in products}
        self.calls: list[str] = []
        self.batch = True
        self.app.router.add_get("/products/batch", self.get_products)
        self.app.router.add_get("/products/{sku}", self.get_product)

    async def get_products(self, request: web.Request) -> web.Response:
        self.calls.append(request.path_qs)
        if not self.batch:
            return web.json_response({"title": "Not found"}, status=404)
        skus = request.query.getall("sku")
        if self.BROKEN in skus:
            return web.json_response({"title": "Internal error"}, status=500)
        if self.GARBLED in skus:
            return web.json_response({"items": [{"sku": self.GARBLED}]})
        return web.json_response({"items": [self.products[s] for s in skus if s in self.products]})

    async def get_product(self, request: web.Request) -> web.Response:
        self.calls.append(request.path_qs)
        sku = request.match_info["sku"]
        if sku == self.BROKEN:
            return web.json_response({"title": "Internal error"}, status=500)
        if sku not in self.products:
            return web.json_response({"title": "Not found"}, status=404)
        return web.json_response(self.products[sku])
