"""`GET /api` reports the broker on its own: the gateway's connection to it, and each replica's as
its `/readyz` tells it. A service whose broker is away stays healthy: it keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from aiohttp import web

from agora_tools.testing import NatsServer, found_within

from .conftest import Upstream

if TYPE_CHECKING:
    from .conftest import StartGateway


def reporting(broker: dict[str, Any]) -> Upstream:
    """A ready replica whose /readyz says this of its broker."""

    def routes(_: Upstream) -> list[web.RouteDef]:
        async def ready(_: web.Request) -> web.Response:
            body = {
                "status": "ready",
                "checks": {"database": {"ok": True}, "broker": {**broker, "required": False}},
            }
            return web.json_response(body)

        return [web.get("/readyz", ready)]

    return Upstream(routes).start()


@pytest.fixture
def broker_down() -> Iterator[Upstream]:
    upstream = reporting({"ok": False, "error": "broker not connected"})
    yield upstream
    upstream.stop()


@pytest.fixture
def broker_up() -> Iterator[Upstream]:
    upstream = reporting({"ok": True})
    yield upstream
    upstream.stop()


def services(gateway: httpx.Client) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in gateway.get("/api").json()["services"]}


def test_a_replica_whose_broker_is_away_stays_healthy_and_says_so(
    start_gateway: StartGateway, broker_down: Upstream, broker_up: Upstream
) -> None:
    gateway = start_gateway(replicas={"catalog": [broker_down.url, broker_up.url]})

    catalog = services(gateway)["catalog"]

    assert catalog["healthy"] is True
    assert catalog["ready_replicas"] == 2
    assert [i["broker"] for i in catalog["instances"]] == [
        {"connected": False, "error": "broker not connected"},
        {"connected": True},
    ]


def test_a_replica_saying_nothing_of_a_broker_is_listed_without_one(
    gateway: httpx.Client,
) -> None:
    identity = services(gateway)["identity"]

    assert identity["healthy"] is True
    assert "broker" not in identity["instances"][0]


def test_without_a_broker_the_gateway_says_none_is_configured(gateway: httpx.Client) -> None:
    assert gateway.get("/api").json()["broker"] == {
        "url": None,
        "connected": False,
        "error": "no broker configured",
    }


def test_the_gateway_reports_its_broker_connected_then_away_while_it_keeps_serving(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    with NatsServer(tmp_path / "nats") as nats_server:
        gateway = start_gateway(nats_url=nats_server.url)

        def broker(connected: bool) -> dict[str, Any] | None:
            state: dict[str, Any] = gateway.get("/api").json()["broker"]
            return state if state["connected"] is connected else None

        assert found_within(lambda: broker(True), "the broker connected") == {
            "url": nats_server.url,
            "connected": True,
        }

        nats_server.kill()

        away = found_within(lambda: broker(False), "the broker away")
        assert away["url"] == nats_server.url
        assert away["error"]
        assert services(gateway)["gateway"]["healthy"] is True
        assert services(gateway)["catalog"]["healthy"] is True
