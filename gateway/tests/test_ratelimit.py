"""Each client gets a bucket of requests: a burst, then a steady rate, then 429 with Retry-After."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from gateway.ratelimit import TokenBuckets
from gateway.settings import GatewaySettings

if TYPE_CHECKING:
    from .conftest import StartGateway


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_client_may_send_its_burst_then_is_told_how_long_to_wait() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=2.0, burst=3, clock=clock)

    assert [await buckets.take("ada") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert await buckets.take("ada") == pytest.approx(0.5)


async def test_tokens_come_back_at_the_rate() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=2.0, burst=3, clock=clock)
    for _ in range(3):
        await buckets.take("ada")

    clock.now += 1.0

    assert [await buckets.take("ada") for _ in range(2)] == [0.0, 0.0]
    assert await buckets.take("ada") > 0


async def test_a_refused_request_costs_no_token() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1.0, burst=1, clock=clock)
    await buckets.take("ada")
    for _ in range(10):
        await buckets.take("ada")

    clock.now += 1.0

    assert await buckets.take("ada") == 0.0


async def test_clients_have_buckets_of_their_own() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, clock=Clock())
    await buckets.take("ada")

    assert await buckets.take("ada") > 0
    assert await buckets.take("grace") == 0.0


async def test_idle_clients_are_forgotten() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=10.0, burst=20, clock=clock)
    for client in range(100):
        await buckets.take(f"client-{client}")

    clock.now += 2.0  # long enough for every bucket to be full again
    for _ in range(60):
        await buckets.take("ada")

    assert len(buckets) == 1


async def test_memory_stays_bounded_under_many_clients() -> None:
    buckets = TokenBuckets(rate=1.0, burst=5, max_clients=50, clock=Clock())

    for client in range(1000):
        await buckets.take(f"client-{client}")

    assert len(buckets) == 50


def test_the_rate_and_burst_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGORA_GATEWAY_RATE_LIMIT", "25")
    monkeypatch.setenv("AGORA_GATEWAY_RATE_BURST", "40")

    settings = GatewaySettings()

    assert (settings.rate_limit, settings.rate_burst) == (25.0, 40)
    assert GatewaySettings.model_fields["port"].default == 8000


def test_a_client_over_its_burst_gets_429_with_retry_after(start_gateway: StartGateway) -> None:
    # One token every thousand seconds: none comes back while the test runs.
    gateway = start_gateway(rate_limit=0.001, rate_burst=3)

    answers = [gateway.get("/api/catalog/products") for _ in range(4)]

    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["status"] == 429
    assert refused.json()["request_id"] == refused.headers["x-request-id"]


def test_probes_are_never_limited(start_gateway: StartGateway) -> None:
    gateway = start_gateway(rate_limit=0.001, rate_burst=1)
    gateway.get("/api")

    assert gateway.get("/api").status_code == 429
    assert [gateway.get("/livez").status_code for _ in range(5)] == [200] * 5
    assert gateway.get("/readyz").status_code == 200
    assert gateway.get("/metrics").status_code == 200
