"""A real Prometheus scraping the shop: `agora up --prometheus` while checkouts run.

Prometheus (Debian's package, installed when missing) scrapes every replica and the gateway as
`agora status` lists them, every second here, and evaluates the topology's rules with each
alert's `for:` shortened to seconds. Read back from its HTTP API: every target is up, the
recording rules and the consumers' lag have values, and the replica-down alert fires when
payments is stopped with `agora stop` and clears when it is started again.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from shopping import APPROVED, TERMINAL, admin_env, open_shop

from agora.process import topology_at
from agora_tools.harness import RunningSystem, wait_for
from agora_tools.testing import debian_command

pytest_plugins = ["shopping"]  # the fixture shop
pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

PACKAGE = "prometheus"
# Seconds between scrapes and evaluations, and how long each alert waits before it fires.
INTERVAL = "1"
ALERT_FOR = "2"
# Not scraped: the broker serves JSON, and Prometheus does not scrape itself here.
UNSCRAPED = {"nats", "prometheus"}


@pytest.fixture(scope="module")
def prometheus_installed() -> None:
    """Debian's prometheus package, installed when missing."""
    debian_command(PACKAGE, PACKAGE)


@pytest.fixture(scope="module")
def system(
    prometheus_installed: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningSystem]:
    _, topology = topology_at()
    # The broker, every replica, the gateway and Prometheus.
    processes = 3 + sum(service.replicas for service in topology)
    directory = tmp_path_factory.mktemp("prometheus") / "shop"
    flags = ["--prometheus", "--prometheus-interval", INTERVAL, "--prometheus-alert-for", ALERT_FOR]
    with RunningSystem(directory, *flags, env={**os.environ, **admin_env()}) as running:
        running.wait_healthy(count=processes)
        yield running


@pytest.fixture(scope="module")
def checkouts(system: RunningSystem) -> Iterator[list[str]]:
    """Checkouts, one after the other, for as long as the module's tests run: the statuses the
    orders ended in (or stayed in, when payments was stopped)."""
    statuses: list[str] = []
    stop = threading.Event()

    def shop_on() -> None:
        with open_shop(system) as shop:
            shopper = shop.shopper()
            sku = shop.products(1)[0]["sku"]
            while not stop.is_set():
                answer = shopper.place([{"sku": sku, "quantity": 1}], APPROVED)
                if answer.status_code == 202:
                    order = shopper.wait_until_terminal(answer.json()["id"])
                    statuses.append(order["status"])

    thread = threading.Thread(target=shop_on, name="checkouts", daemon=True)
    thread.start()
    yield statuses
    stop.set()
    thread.join(timeout=60)


class Prometheus:
    """Prometheus's HTTP API."""

    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        answer = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()["data"]

    def query(self, expression: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("query", query=expression)["result"]
        return result

    def services_in(self, expression: str) -> set[str]:
        return {series["metric"].get("service", "") for series in self.query(expression)}

    def replica_down(self) -> dict[str, str]:
        """The AgoraReplicaDown alerts now, by service: pending or firing."""
        return {
            alert["labels"]["service"]: alert["state"]
            for alert in self.get("alerts")["alerts"]
            if alert["labels"]["alertname"] == "AgoraReplicaDown"
        }


@pytest.fixture(scope="module")
def prometheus(system: RunningSystem) -> Prometheus:
    url = system.state()["prometheus_url"]
    assert f"Prometheus: {url}" in system.printed()
    return Prometheus(url)


def test_every_replica_and_the_gateway_are_scraped_and_up(
    system: RunningSystem, prometheus: Prometheus, checkouts: list[str]
) -> None:
    listed = {
        (p["service"], str(p["replica"])) for p in system.status() if p["service"] not in UNSCRAPED
    }

    def all_up() -> dict[tuple[str, str], str] | None:
        found = prometheus.get("targets", state="active")["activeTargets"]
        health = {(t["labels"]["service"], t["labels"]["replica"]): t["health"] for t in found}
        return health if set(health.values()) == {"up"} else None

    scraped = wait_for("every target up", all_up, timeout=60)

    assert set(scraped) == listed
    assert ("gateway", "0") in scraped
    assert {value["value"][1] for value in prometheus.query("up")} == {"1"}


def test_the_recording_rules_and_the_consumers_lag_have_values_while_checkouts_run(
    prometheus: Prometheus, checkouts: list[str]
) -> None:
    # The checkout's path: an order placed at orders, priced at catalog, paid at payments.
    wanted = {
        "service:agora_http_requests:rate5m": {"identity", "catalog", "orders"},
        "service:agora_http_request_duration_seconds:p50_5m": {"orders"},
        "service:agora_http_request_duration_seconds:p99_5m": {"orders"},
        'service_consumer_outcome:agora_events_consumed:rate5m{outcome="handled"}': {
            "payments",
            "orders",
        },
        "service_outcome:agora_outbox_published:rate5m": {"orders", "payments"},
        "agora_consumer_pending_messages": {"payments", "orders"},
        "agora_consumer_ack_pending_messages": {"payments", "orders"},
    }

    def evaluated() -> dict[str, set[str]] | None:
        found = {expression: prometheus.services_in(expression) for expression in wanted}
        done = all(services <= found[expression] for expression, services in wanted.items())
        return found if done else None

    wait_for("the recording rules and the lag to have values", evaluated, timeout=120)
    assert set(checkouts) <= TERMINAL
    assert "CONFIRMED" in checkouts


def test_the_replica_down_alert_fires_when_payments_stops_and_clears_when_it_starts_again(
    system: RunningSystem, prometheus: Prometheus, checkouts: list[str]
) -> None:
    assert prometheus.replica_down() == {}

    def fired() -> dict[str, str] | None:
        down = prometheus.replica_down()
        return down if down.get("payments") == "firing" else None

    def cleared() -> bool | None:
        return prometheus.replica_down() == {} or None

    stopped = system.agora("stop", "payments")
    assert stopped.returncode == 0, stopped.stderr
    try:
        firing = wait_for("AgoraReplicaDown firing for payments", fired, timeout=90)
    finally:
        started = system.agora("start", "payments", timeout=120)
    assert started.returncode == 0, started.stderr
    wait_for("AgoraReplicaDown to clear once payments is back", cleared, timeout=90)

    assert firing == {"payments": "firing"}
