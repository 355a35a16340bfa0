"""The whole system through `agora up`, as a newcomer meets it.

One journey through the gateway: register, log in, see who I am, browse the catalogue by
category and by a search word, open a product, and as the admin add a product that then shows in
the list. Then the catalog process is SIGKILLed, comes back on its own, and the journey works
again; SIGTERM stops everything, leaving no process behind. With `--scale catalog=2` the gateway
spreads reads over both catalog replicas.
"""

from __future__ import annotations

import json
import os
import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agora_tools.harness import RunningSystem, process_gone, wait_for
from agora_tools.testing import wait_restarted

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

ADMIN_EMAIL = "admin@shop.example"
ADMIN_PASSWORD = "system-test admin passphrase"
# nats, identity, catalog, inventory, payments, orders, cart, notifications, shipping, gateway
PROCESSES = 10


@pytest.fixture
def env() -> dict[str, str]:
    return {**os.environ, "AGORA_ADMIN_EMAIL": ADMIN_EMAIL, "AGORA_ADMIN_PASSWORD": ADMIN_PASSWORD}


@pytest.fixture
def system(tmp_path: Path, env: dict[str, str], shape: tuple[str, ...]) -> Iterator[RunningSystem]:
    with RunningSystem(tmp_path / "shop", *shape, env=env) as running:
        yield running


def log_in(api: httpx.Client, email: str, password: str) -> dict[str, str]:
    answer = api.post("/api/identity/token", json={"email": email, "password": password})
    assert answer.status_code == 200, answer.text
    token = answer.json()
    assert token["token_type"] == "bearer"
    return {"authorization": f"Bearer {token['access_token']}"}


def walk_the_journey(api: httpx.Client) -> None:
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    password = f"plum-orchard-{uuid.uuid4().hex[:6]}"

    registered = api.post("/api/identity/users", json={"email": email, "password": password})
    assert registered.status_code == 201, registered.text
    assert registered.json()["email"] == email

    customer = log_in(api, email, password)
    me = api.get("/api/identity/me", headers=customer)
    assert me.status_code == 200, me.text
    assert me.json()["email"] == email

    categories = api.get("/api/catalog/categories")
    assert categories.status_code == 200, categories.text
    category = next(c["slug"] for c in categories.json() if c["product_count"] > 0)
    in_category = api.get("/api/catalog/products", params={"category": category})
    assert in_category.status_code == 200, in_category.text
    items = in_category.json()["items"]
    assert items
    assert {item["category"] for item in items} == {category}

    product = items[0]
    word = max(re.findall(r"[A-Za-z]{4,}", product["name"]), key=len)
    found = api.get("/api/catalog/products", params={"q": word}).json()["items"]
    assert product["sku"] in [item["sku"] for item in found]
    assert all(word.lower() in f"{i['name']} {i['description']}".lower() for i in found)

    opened = api.get(f"/api/catalog/products/{product['sku']}")
    assert opened.status_code == 200, opened.text
    assert opened.json()["name"] == product["name"]

    sku = f"SYS-{uuid.uuid4().hex[:8].upper()}"
    new_product = {
        "sku": sku,
        "name": f"Walnut Serving Board {sku}",
        "description": "Oiled walnut, 40 by 25 cm.",
        "price": 4900,
        "currency": "EUR",
        "category": category,
    }
    refused = api.post("/api/catalog/products", json=new_product, headers=customer)
    assert refused.status_code == 403, refused.text
    admin = log_in(api, ADMIN_EMAIL, ADMIN_PASSWORD)
    created = api.post("/api/catalog/products", json=new_product, headers=admin)
    assert created.status_code == 201, created.text
    listed = api.get("/api/catalog/products", params={"category": category, "q": sku})
    assert [item["sku"] for item in listed.json()["items"]] == [sku]


def test_the_journey_survives_a_killed_catalog_and_sigterm_leaves_nothing(
    system: RunningSystem,
) -> None:
    processes = system.wait_healthy(count=PROCESSES)
    assert {p["service"] for p in processes} == {
        "nats",
        "identity",
        "catalog",
        "inventory",
        "payments",
        "orders",
        "cart",
        "notifications",
        "shipping",
        "gateway",
    }
    assert f"Gateway: {system.gateway_url}" in system.printed()

    with httpx.Client(base_url=system.gateway_url, timeout=30) as api:
        walk_the_journey(api)

        catalog = system.process_of("catalog")
        os.kill(catalog["pid"], signal.SIGKILL)

        restarted = wait_restarted(system, catalog)
        assert restarted["port"] == catalog["port"]
        # The runner names the process that died: catalog's own, or the group it ran in.
        died = f"{catalog['group'] or 'catalog'}[0] exited unexpectedly (killed by SIGKILL)"
        assert died in system.printed()
        system.wait_healthy(count=PROCESSES)  # together, the gateway came back with catalog

        walk_the_journey(api)
        follow_one_request_through_the_logs(api, system)

    pids = [p["pid"] for p in system.status()]
    assert system.stop() == 0
    assert [pid for pid in pids if not process_gone(pid)] == []
    assert system.agora("status").returncode == 1


def request_lines(log: Path, request_id: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("request_id") == request_id]


def follow_one_request_through_the_logs(api: httpx.Client, system: RunningSystem) -> None:
    """One request id, one trace id: the gateway's log line and catalog's tell the same story,
    in their own processes' logs or in their group's one."""
    logs = {p["service"]: Path(p["log"]) for p in system.state()["processes"] if p["replica"] == 0}
    request_id = f"probe-{uuid.uuid4().hex}"
    sku = api.get("/api/catalog/products", params={"limit": 1}).json()["items"][0]["sku"]
    answer = api.get(f"/api/catalog/products/{sku}", headers={"x-request-id": request_id})
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] == request_id

    def logged() -> tuple[dict[str, Any], dict[str, Any]] | None:
        # Each service's line, in its log: the same file for both when they share a process.
        at_gateway = request_lines(logs["gateway"], request_id)
        at_catalog = request_lines(logs["catalog"], request_id)
        gateway = [line for line in at_gateway if line["service"] == "gateway"]
        catalog = [line for line in at_catalog if line["service"] == "catalog"]
        if gateway and catalog:
            return gateway[-1], catalog[-1]
        return None

    gateway_line, catalog_line = wait_for("both log lines of the request", logged, timeout=30)
    # Every line of the request names the service that wrote it.
    shared = logs["gateway"] == logs["catalog"]
    for service, other in (("gateway", "catalog"), ("catalog", "gateway")):
        named = {line["service"] for line in request_lines(logs[service], request_id)}
        assert named <= {service, *([other] if shared else [])}
    assert catalog_line["route"] == "/products/{sku}"
    assert len(gateway_line["trace_id"]) == 32
    assert catalog_line["trace_id"] == gateway_line["trace_id"]
    # The catalog's span is a child within the trace, not the gateway's own span.
    assert catalog_line["span_id"] != gateway_line["span_id"]


def requests_served(port: int) -> float:
    """How many `GET /products/{sku}` a catalog replica has answered, from its own /metrics."""
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "agora_http_requests_total"
        and sample.labels.get("route") == "/products/{sku}"
        and sample.labels.get("method") == "GET"
    )


def test_scaled_catalog_replicas_share_the_reads(tmp_path: Path, env: dict[str, str]) -> None:
    with RunningSystem(tmp_path / "scaled", "--scale", "catalog=2", env=env) as system:
        processes = system.wait_healthy(count=PROCESSES + 1)
        replicas = [p for p in processes if p["service"] == "catalog"]
        assert [p["replica"] for p in replicas] == [0, 1]
        before = [requests_served(p["port"]) for p in replicas]

        with httpx.Client(base_url=system.gateway_url, timeout=30) as api:
            sku = api.get("/api/catalog/products", params={"limit": 1}).json()["items"][0]["sku"]
            for _ in range(20):
                assert api.get(f"/api/catalog/products/{sku}").status_code == 200

        served = [requests_served(p["port"]) - b for p, b in zip(replicas, before, strict=True)]
        assert sum(served) == 20
        assert all(count > 0 for count in served), served
        pids = [p["pid"] for p in processes]
        assert system.stop() == 0
        assert [pid for pid in pids if not process_gone(pid)] == []
