"""What `agora verify` reads, against a stand-in gateway: shipping's shipments when the topology
declares it (and a read failure when it is declared but does not answer), none when it does not,
and a shipment still on its way waited for."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from consistency.checks import check
from consistency.snapshot import Gateway, ReadFailed, read_settled


def _iso(moment: datetime) -> str:
    return moment.isoformat()


@dataclass
class Shop:
    """What the stand-in gateway serves; the tests change it as they go."""

    services: list[str] = field(default_factory=lambda: ["identity", "orders", "shipping"])
    orders: list[dict[str, Any]] = field(default_factory=list)
    shipments: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    users: list[str] = field(default_factory=lambda: ["u-1"])
    shipping_answers: int = 200
    shipment_reads: list[dict[str, str]] = field(default_factory=list)
    # Called on each read of the shipments, before answering (to let a shipment arrive).
    on_shipments: Callable[[Shop], None] = lambda shop: None


def confirmed(order_id: str, at: datetime) -> dict[str, Any]:
    return {
        "id": order_id,
        "user_id": "u-1",
        "status": "CONFIRMED",
        "total": 0,
        "lines": [],
        "deadline_at": _iso(at + timedelta(seconds=60)),
        "updated_at": _iso(at),
        "checkout": {"step": "done"},
    }


def shipped(shipment_id: str, order_id: str, at: datetime) -> dict[str, Any]:
    return {
        "id": shipment_id,
        "order_id": order_id,
        "user_id": "u-1",
        "status": "label_created",
        "carrier": "dhl",
        "created_at": _iso(at),
        "dispatched_at": None,
        "delivered_at": None,
    }


def _page(items: list[dict[str, Any]], request: web.Request) -> web.Response:
    """``{items, next_cursor}``, ``limit`` a page, the cursor being the next item's index."""
    limit = int(request.query["limit"])
    start = int(request.query.get("cursor", "0"))
    end = start + limit
    cursor = str(end) if end < len(items) else None
    return web.json_response({"items": items[start:end], "next_cursor": cursor})


def gateway_app(shop: Shop) -> web.Application:
    async def api(request: web.Request) -> web.Response:
        return web.json_response({"services": [{"name": name} for name in shop.services]})

    async def shipments(request: web.Request) -> web.Response:
        shop.shipment_reads.append(dict(request.query))
        if "shipping" not in shop.services:
            return web.json_response({"title": "Not found"}, status=404)
        if shop.shipping_answers != 200:
            return web.json_response(
                {"title": "Bad gateway"}, status=shop.shipping_answers, headers={"Retry-After": "0"}
            )
        if int(request.query["limit"]) > 100:
            return web.json_response({"title": "Invalid request"}, status=422)
        shop.on_shipments(shop)
        return _page(shop.shipments, request)

    def listing(items: Callable[[], list[dict[str, Any]]]) -> Any:
        async def handler(request: web.Request) -> web.Response:
            return _page(items(), request)

        return handler

    app = web.Application()
    app.router.add_get("/api", api)
    app.router.add_get("/api/shipments", shipments)
    app.router.add_get("/api/orders", listing(lambda: shop.orders))
    app.router.add_get("/api/identity/users", listing(lambda: [{"id": u} for u in shop.users]))
    app.router.add_get("/api/notifications/all", listing(lambda: shop.messages))
    for empty in (
        "/api/inventory/stock",
        "/api/inventory/reservations",
        "/api/payments",
        "/api/payments/ledger/movements",
    ):
        app.router.add_get(empty, listing(list))
    return app


@pytest.fixture
def shop() -> Shop:
    return Shop(messages=[{"id": "n-1", "user_id": "u-1", "kind": "welcome", "order_id": None}])


@pytest.fixture
async def gateway(shop: Shop) -> AsyncIterator[Gateway]:
    server = TestServer(gateway_app(shop))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield Gateway(session, str(server.make_url("/")))
    finally:
        await server.close()


async def test_shipments_are_read_page_by_page_when_the_topology_declares_shipping(
    shop: Shop, gateway: Gateway
) -> None:
    now = datetime.now(UTC)
    shop.shipments = [shipped(f"s-{n}", f"o-{n}", now) for n in range(150)]
    shop.messages.append(
        {
            "id": "n-2",
            "user_id": "u-1",
            "kind": "shipment_dispatched",
            "order_id": "o-1",
            "shipment_id": "s-1",
        }
    )

    snapshot = await gateway.snapshot()

    assert snapshot.shipments is not None
    assert [s.id for s in snapshot.shipments] == [f"s-{n}" for n in range(150)]
    assert all(read["limit"] == "100" for read in shop.shipment_reads)
    assert len(shop.shipment_reads) == 2
    assert snapshot.shipments[0].dispatched_at is None
    assert [m.shipment_id for m in snapshot.messages] == [None, "s-1"]


async def test_a_system_without_shipping_reads_no_shipments(shop: Shop, gateway: Gateway) -> None:
    shop.services = ["identity", "orders"]

    snapshot = await gateway.snapshot()

    assert snapshot.shipments is None
    assert shop.shipment_reads == []
    assert check(snapshot).notes == (
        "shipping is not in the system's topology: no shipment was checked",
    )


@pytest.mark.parametrize("status", [502, 500])
async def test_shipping_declared_but_not_answering_is_a_read_failure(
    shop: Shop, gateway: Gateway, status: int
) -> None:
    shop.shipping_answers = status

    with pytest.raises(ReadFailed, match="/api/shipments"):
        await gateway.snapshot()


async def test_a_shipment_on_its_way_is_waited_for(shop: Shop, gateway: Gateway) -> None:
    now = datetime.now(UTC)
    shop.orders = [confirmed("o-1", now)]
    shop.messages.append(
        {"id": "n-2", "user_id": "u-1", "kind": "order_confirmed", "order_id": "o-1"}
    )

    def arrives_on_the_third_read(shop: Shop) -> None:
        if len(shop.shipment_reads) >= 3:
            shop.shipments = [shipped("s-1", "o-1", now)]

    shop.on_shipments = arrives_on_the_third_read

    snapshot = await read_settled(gateway, wait=30)

    assert snapshot.shipments is not None
    assert [s.id for s in snapshot.shipments] == ["s-1"]
    assert check(snapshot).ok


async def test_a_shipment_that_never_comes_is_reported_once_the_grace_has_passed(
    shop: Shop, gateway: Gateway
) -> None:
    confirmed_at = datetime.now(UTC) - timedelta(seconds=2)
    shop.orders = [confirmed("o-1", confirmed_at)]
    shop.messages.append(
        {"id": "n-2", "user_id": "u-1", "kind": "order_confirmed", "order_id": "o-1"}
    )
    grace = timedelta(seconds=1)

    snapshot = await read_settled(gateway, wait=30, shipment_grace=grace)
    report = check(snapshot, shipment_grace=grace)

    assert [f"{v.check} {v.subject}" for v in report.violations] == ["shipment order o-1"]
