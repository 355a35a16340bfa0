"""`GET /api` lists the gateway and every declared service with its health."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from agora_tools.testing import free_port

from .conftest import UPSTREAM_VERSION

if TYPE_CHECKING:
    from .conftest import StartGateway, Upstream


def test_get_api_lists_every_service_and_tells_the_down_one(gateway: httpx.Client) -> None:
    reply = gateway.get("/api")

    assert reply.status_code == 200
    services = {entry["name"]: entry for entry in reply.json()["services"]}
    assert list(services) == ["gateway", "identity", "catalog", "inventory", "orders"]
    for name in ("gateway", "identity", "catalog"):
        assert services[name]["healthy"] is True
        assert services[name]["replicas"] == 1
    assert services["inventory"]["healthy"] is False
    assert services["inventory"]["instances"] == [
        {"replica": 0, "ready": False, "error": "unreachable"}
    ]


def test_a_service_is_healthy_while_one_of_its_replicas_is_ready(
    start_gateway: StartGateway, catalog: Upstream
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    gateway = start_gateway(replicas={"catalog": [dead, catalog.url]})

    services = {entry["name"]: entry for entry in gateway.get("/api").json()["services"]}

    assert services["catalog"]["healthy"] is True
    assert services["catalog"]["replicas"] == 2
    assert services["catalog"]["ready_replicas"] == 1
    assert [i["ready"] for i in services["catalog"]["instances"]] == [False, True]


def test_get_api_tells_the_version_each_replica_runs(gateway: httpx.Client) -> None:
    services = {entry["name"]: entry for entry in gateway.get("/api").json()["services"]}

    assert services["catalog"]["instances"] == [
        {"replica": 0, "ready": True, "version": UPSTREAM_VERSION}
    ]
    # A replica that does not answer says nothing of its version.
    assert "version" not in services["inventory"]["instances"][0]


def test_a_declared_service_without_an_address_is_listed_as_unhealthy(
    start_gateway: StartGateway, service_urls: dict[str, list[str]]
) -> None:
    urls = {name: url for name, url in service_urls.items() if name != "inventory"}
    gateway = start_gateway(service_urls=urls)

    services = {entry["name"]: entry for entry in gateway.get("/api").json()["services"]}

    assert services["inventory"]["healthy"] is False
    assert services["inventory"]["error"] == "no address known"
    assert gateway.get("/api/inventory/stock/tea-1").status_code == 503
