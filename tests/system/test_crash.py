"""Checkouts survive crashes: 200 of them in flight while inventory, payments, orders and shipping
are each SIGKILLed (and restarted by `agora up`), then the broker is down for 10 s. Every order is
terminal within 30 s of the last fault, no checkout made two orders, every CONFIRMED order ends
with exactly one shipment, delivered, and no CANCELLED one has any, and `agora verify` passes.

It runs twice: on the embedded profile (SQLite files, the broker `agora up` runs), and on the
production profile (a PostgreSQL database per service on the shared server, the gateway's rate
limits in the shared Redis under a key prefix of the test's own, and a nats-server the test
starts and kills itself).
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from shopping import APPROVED, DECLINED, DELIVERED, TERMINAL, Shop, admin_env, open_shop

from agora.topology import load_topology
from agora_tools.harness import ADDRESS, SHAPES, RunningSystem, wait_for
from agora_tools.testing import (
    NatsServer,
    postgres_database,
    redis_prefix,
    require_server,
    wait_restarted,
)

pytestmark = [pytest.mark.system, pytest.mark.timeout(900)]

CHECKOUTS = 200
SHOPPERS = 20
OFFERED_PER_SECOND = 8.0  # so the checkouts are still coming while the faults happen
SETTLE = 30.0  # seconds after the last fault by which every order must be terminal
BROKER_DOWN = 10.0
# nats, identity, catalog, inventory, payments, orders, cart, notifications, shipping, gateway
PROCESSES = 10
# Each service of the topology keeps its own database in the production profile.
DATABASES = tuple(load_topology().services)
KILLED = ("inventory", "payments", "orders", "shipping")
# The carrier moves a shipment a step a second, so it is moving some when shipping is killed.
SHIPPING_STEPS = {
    "AGORA_SHIPPING_DISPATCH_AFTER": "1",
    "AGORA_SHIPPING_DELIVER_AFTER": "1",
    "AGORA_SHIPPING_CARRIER_POLL": "0.2",
}
SHIPPED = 120.0  # seconds after every order is terminal by which every shipment is delivered
REDIS = ("127.0.0.1", 6379)


class Broker:
    """How the test takes the broker away for a while and brings it back."""

    def __init__(self, down: Callable[[], None], up: Callable[[], None]) -> None:
        self.down = down
        self.up = up


# The profile, and the shape `agora up` runs the shop in (ADR 53). Together, each service killed
# takes every Python service and the gateway down with it, and the broker's outage meets them all.
DEPLOYMENTS = [("embedded", "apart"), ("production", "apart"), ("embedded", "together")]


@pytest.fixture(params=DEPLOYMENTS, ids=["-".join(deployment) for deployment in DEPLOYMENTS])
def deployment(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[RunningSystem, Broker]]:
    profile, shape = request.param
    with ExitStack() as stack:
        env = {**os.environ, **admin_env(**SHIPPING_STEPS)}
        if profile == "production":
            require_server(*REDIS, "Redis")
            nats = stack.enter_context(NatsServer(tmp_path / "nats"))
            env.update(
                AGORA_PROFILE="production",
                # The production profile makes up no secret: identity's key-encryption key is given.
                AGORA_IDENTITY_KEY_ENCRYPTION_KEY=secrets.token_urlsafe(32),
                AGORA_NATS_URL=nats.url,
                AGORA_GATEWAY_REDIS_URL=f"redis://{REDIS[0]}:{REDIS[1]}/0",
                AGORA_GATEWAY_REDIS_PREFIX=stack.enter_context(redis_prefix("crash-gateway")),
                # The production cart keeps its lines in Redis (its inbox in its database).
                AGORA_CART_REDIS_URL=f"redis://{REDIS[0]}:{REDIS[1]}/0",
                AGORA_CART_REDIS_PREFIX=stack.enter_context(redis_prefix("crash-cart")),
            )
            for service in DATABASES:
                url = stack.enter_context(postgres_database(f"crash_{service}"))
                env[f"AGORA_{service.upper()}_DATABASE_URL"] = url

            def start_own() -> None:
                nats.start()  # the same port and data directory: the services reconnect

            broker = Broker(nats.kill, start_own)
        system = stack.enter_context(RunningSystem(tmp_path / "shop", *SHAPES[shape], env=env))
        if profile == "embedded":

            def stop_embedded() -> None:
                assert system.agora("stop", "nats", "--kill").returncode == 0

            def start_embedded() -> None:
                assert system.agora("start", "nats").returncode == 0

            broker = Broker(stop_embedded, start_embedded)
        system.wait_healthy(count=PROCESSES)
        yield system, broker


async def checkout(
    session: aiohttp.ClientSession, url: str, token: str, lines: list[dict[str, Any]], card: str
) -> str:
    """Place one order, as a careful client does through crashes: the same Idempotency-Key on
    every try, trying again on no answer, 5xx, 429 and 409 (the first try still in progress)."""
    key = uuid.uuid4().hex
    body = {"lines": lines, "shipping_address": ADDRESS, "card_number": card}
    headers = {"authorization": f"Bearer {token}", "idempotency-key": key}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            async with session.post(f"{url}/api/orders", json=body, headers=headers) as reply:
                if reply.status in {200, 201, 202}:
                    order_id: str = (await reply.json())["id"]
                    return order_id
                if reply.status < 500 and reply.status not in {409, 429}:
                    raise AssertionError(f"checkout refused: {reply.status} {await reply.text()}")
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(0.2)
    raise AssertionError("a checkout got no answer for two minutes")


async def checkouts(url: str, tokens: list[str], skus: list[str]) -> list[str]:
    chooser = random.Random(7)
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        tasks = []
        for i in range(CHECKOUTS):
            lines = [
                {"sku": sku, "quantity": chooser.randint(1, 2)}
                for sku in chooser.sample(skus, chooser.randint(1, 2))
            ]
            card = DECLINED if i % 10 == 9 else APPROVED
            tasks.append(
                asyncio.create_task(checkout(session, url, tokens[i % SHOPPERS], lines, card))
            )
            await asyncio.sleep(1 / OFFERED_PER_SECOND)
        return list(await asyncio.gather(*tasks))


def kill_and_wait_for_restart(system: RunningSystem, service: str) -> None:
    before = system.process_of(service)
    os.kill(before["pid"], signal.SIGKILL)
    wait_restarted(system, before, timeout=60)


def every_order(shop: Shop) -> list[dict[str, Any]]:
    orders: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
        page = shop.api.get("/api/orders", params=params, headers=shop.admin).json()
        orders.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return orders


def test_every_checkout_ends_and_stays_consistent_through_crashes_and_a_broker_outage(
    deployment: tuple[RunningSystem, Broker],
) -> None:
    system, broker = deployment
    with open_shop(system) as shop:
        run_through_the_faults(system, broker, shop)


def run_through_the_faults(system: RunningSystem, broker: Broker, shop: Shop) -> None:
    tokens = [shop.shopper().headers["authorization"].split()[1] for _ in range(SHOPPERS)]
    skus = [product["sku"] for product in shop.products(30)]
    placed: list[str] = []
    failure: list[BaseException] = []

    def shoppers() -> None:
        try:
            placed.extend(asyncio.run(checkouts(system.gateway_url, tokens, skus)))
        except BaseException as error:
            failure.append(error)

    traffic = threading.Thread(target=shoppers)
    traffic.start()
    time.sleep(2)
    for service in KILLED:
        kill_and_wait_for_restart(system, service)
        time.sleep(1)
    broker.down()
    time.sleep(BROKER_DOWN)
    broker.up()
    last_fault = time.monotonic()
    traffic.join(timeout=300)

    assert not failure, failure
    assert len(placed) == CHECKOUTS
    assert len(set(placed)) == CHECKOUTS  # no retried checkout made a second order

    def all_terminal() -> list[dict[str, Any]] | None:
        mine = [o for o in every_order(shop) if o["id"] in set(placed)]
        return mine if all(o["status"] in TERMINAL for o in mine) else None

    remaining = SETTLE - (time.monotonic() - last_fault)
    orders = wait_for("every order to be terminal", all_terminal, timeout=max(remaining, 1))
    assert len(orders) == CHECKOUTS
    assert {o["status"] for o in orders} <= TERMINAL
    assert any(o["status"] == "CONFIRMED" for o in orders)
    confirmed = {o["id"] for o in orders if o["status"] == "CONFIRMED"}
    cancelled = {o["id"] for o in orders if o["status"] == "CANCELLED"}

    def all_delivered() -> list[dict[str, Any]] | None:
        mine = [s for s in shop.every_shipment() if s["order_id"] in confirmed | cancelled]
        shipped = {s["order_id"] for s in mine}
        done = shipped >= confirmed and all(s["status"] == DELIVERED for s in mine)
        return mine if done else None

    shipments = wait_for("every confirmed order's shipment to be delivered", all_delivered, SHIPPED)
    per_order = Counter(s["order_id"] for s in shipments)
    assert set(per_order) == confirmed  # none for a cancelled order
    assert set(per_order.values()) == {1}  # exactly one for each confirmed order
    shop.verify()
