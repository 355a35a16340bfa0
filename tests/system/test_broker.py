"""The broker under `agora up` takes only its users, each to its own messages; and it dies, and no
event is lost.

First, with the credentials `agora up` made: a connection without any is refused, payments'
user cannot publish orders' events, and inventory's cannot read payments' commands. Then a
durable pull consumer of the test's own listens for identity's UserRegistered. The embedded
nats-server is SIGKILLed; at once three users register through the gateway, and each gets 201
(identity keeps accepting writes: its outbox holds the events). `agora up` restarts the broker on
its port and data, the relay publishes what piled up, and the three UserRegistered events reach
the test's consumer, once each.

Last, the broker is stopped for 10 s (`agora stop nats --kill`, then `agora start nats`) just
after a shopper places half a batch of orders and while they place the rest: each is accepted,
and once the broker is back every CONFIRMED order ends with exactly one shipment and no
CANCELLED one has any; `agora verify` passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import nats
import nats.errors
import pytest
from shopping import DELIVERED, admin_env, open_shop

from agora.messaging.envelope import CloudEvent
from agora_tools.harness import RunningSystem, wait_for
from agora_tools.testing import wait_restarted

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

# nats, identity, catalog, inventory, payments, orders, cart, notifications, shipping, gateway
PROCESSES = 10
STREAM = "AGORA_IDENTITY"
SUBJECT = "agora.identity.events.UserRegistered.v1"
DELIVERY_BOUND = 60.0  # seconds for the events to arrive once the broker is back
STARTUP_BOUND = 480.0  # seconds for the shop to be up
ORDER_PLACED = "agora.orders.events.OrderPlaced.v1"
PAYMENTS_COMMANDS = "agora.payments.commands.>"
BROKER_DOWN = 10.0  # seconds the broker stays stopped while orders are placed
ORDERS = 12
SHIPPED = 120.0  # seconds for every order to end and be delivered once the broker is back


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    # Its admin, and a gateway letting one address register, log in and order as the tests do;
    # a checkout asks for its stock long enough to outlast the outage on a busy machine (20 tries
    # 5 s apart), and shipments move a step a second.
    env = {
        **os.environ,
        **admin_env(
            AGORA_ORDERS_RESERVE_ATTEMPTS="20",
            AGORA_ORDERS_SAGA_DEADLINE="300",
            AGORA_SHIPPING_DISPATCH_AFTER="1",
            AGORA_SHIPPING_DELIVER_AFTER="1",
        ),
    }
    with RunningSystem(tmp_path_factory.mktemp("shop"), env=env) as running:
        yield running


class Refusals:
    """What the broker said to one user's connection."""

    def __init__(self) -> None:
        self.said: list[str] = []

    async def keep(self, error: Exception) -> None:
        self.said.append(str(error).lower())

    async def refused(self, subject: str) -> bool:
        """Whether the broker refused ``subject``, waiting up to ten seconds for it to say so."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any("permissions violation" in e and subject.lower() in e for e in self.said):
                return True
            await asyncio.sleep(0.05)
        return False


async def try_to_forge_and_peek(url: str, system: RunningSystem) -> tuple[bool, bool]:
    """Whether the broker refused payments' user an OrderPlaced, and inventory's a subscription
    to payments' commands."""
    payments, inventory = Refusals(), Refusals()
    forger = await nats.connect(
        url, allow_reconnect=False, error_cb=payments.keep, **system.nats_login("payments")
    )
    peeker = await nats.connect(
        url, allow_reconnect=False, error_cb=inventory.keep, **system.nats_login("inventory")
    )
    try:
        with contextlib.suppress(nats.errors.TimeoutError):
            await forger.jetstream().publish(ORDER_PLACED, b"{}", timeout=2)
        await peeker.subscribe(PAYMENTS_COMMANDS)
        return await payments.refused(ORDER_PLACED), await inventory.refused(PAYMENTS_COMMANDS)
    finally:
        await forger.close()
        await peeker.close()


async def connect_without_credentials(url: str) -> None:
    connection = await nats.connect(
        url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=5
    )
    await connection.close()


def test_the_broker_takes_only_its_users_and_each_only_to_its_own_messages(
    system: RunningSystem,
) -> None:
    # The first test starts the whole shop: a bound a busy shared machine can meet.
    system.wait_healthy(count=PROCESSES, timeout=STARTUP_BOUND)
    url = system.state()["nats_url"]

    with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
        asyncio.run(connect_without_credentials(url))
    forging_refused, peeking_refused = asyncio.run(try_to_forge_and_peek(url, system))

    assert forging_refused
    assert peeking_refused


async def subscribe(url: str, login: dict[str, Any], durable: str) -> None:
    """Make the test's durable pull consumer; it stays on the broker when the test disconnects."""
    connection = await nats.connect(url, allow_reconnect=False, connect_timeout=5, **login)
    try:
        await connection.jetstream().pull_subscribe(SUBJECT, durable=durable, stream=STREAM)
    finally:
        await connection.close()


async def register(gateway_url: str, emails: list[str]) -> list[httpx.Response]:
    password = f"plum-orchard-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as api:
        return await asyncio.gather(
            *(
                api.post("/api/identity/users", json={"email": email, "password": password})
                for email in emails
            )
        )


async def receive(
    url: str, login: dict[str, Any], durable: str, emails: set[str]
) -> list[CloudEvent]:
    """What the durable consumer delivers of these users' registrations, until all are in or
    :data:`DELIVERY_BOUND` has passed."""
    received: list[CloudEvent] = []
    deadline = time.monotonic() + DELIVERY_BOUND
    connection = await nats.connect(url, connect_timeout=5, **login)
    try:
        subscription = await connection.jetstream().pull_subscribe(
            SUBJECT, durable=durable, stream=STREAM
        )
        while {e.data["email"] for e in received} < emails and time.monotonic() < deadline:
            try:
                messages = await subscription.fetch(10, timeout=2)
            except nats.errors.TimeoutError:
                continue
            for message in messages:
                event = CloudEvent.from_bytes(message.data)
                if event.data.get("email") in emails:
                    received.append(event)
                await message.ack_sync()
    finally:
        await connection.close()
    return received


def test_events_recorded_while_the_broker_was_killed_arrive_once_it_is_back(
    system: RunningSystem,
) -> None:
    system.wait_healthy(count=PROCESSES)
    url = system.state()["nats_url"]
    broker = system.process_of("nats")
    durable = f"system-test-{uuid.uuid4().hex[:8]}"
    login = system.nats_login()
    asyncio.run(subscribe(url, login, durable))
    emails = [f"outage-{i}-{uuid.uuid4().hex[:8]}@example.com" for i in range(3)]

    os.kill(broker["pid"], signal.SIGKILL)
    answers = asyncio.run(register(system.gateway_url, emails))

    assert [a.status_code for a in answers] == [201, 201, 201], [a.text for a in answers]

    back = wait_restarted(system, broker)
    assert back["port"] == broker["port"]
    assert system.state()["nats_url"] == url
    assert "nats[0] exited unexpectedly (killed by SIGKILL)" in system.printed()

    received = asyncio.run(receive(url, login, durable, set(emails)))

    assert sorted(e.data["email"] for e in received) == sorted(emails)
    assert {e.type for e in received} == {"identity.UserRegistered.v1"}
    assert len({e.id for e in received}) == 3
    # Nothing was taken out of rotation for the broker's absence, and the gateway sees it back.
    assert all(p["healthy"] for p in system.status())
    with httpx.Client(base_url=system.gateway_url, timeout=30) as api:

        def broker_seen() -> dict[str, Any] | None:
            state: dict[str, Any] = api.get("/api").json()["broker"]
            return state if state["connected"] else None

        assert wait_for("the gateway to see the broker", broker_seen, 60)["url"] == url


def test_orders_placed_while_the_broker_is_stopped_each_ship_once_when_it_is_back(
    system: RunningSystem,
) -> None:
    system.wait_healthy(count=PROCESSES, timeout=STARTUP_BOUND)  # also when run alone
    with open_shop(system) as shop:
        shopper = shop.shopper()
        skus = [product["sku"] for product in shop.products(ORDERS)]
        # Half the batch just before the broker stops (their events in flight or waiting to be
        # sent), the other half while it is stopped.
        answers = [shopper.place([{"sku": sku, "quantity": 1}]) for sku in skus[: ORDERS // 2]]
        assert system.agora("stop", "nats", "--kill").returncode == 0
        stopped_at = time.monotonic()
        try:
            answers += [shopper.place([{"sku": sku, "quantity": 1}]) for sku in skus[ORDERS // 2 :]]
            # The outage lasts its full length, however long the orders took to place.
            time.sleep(max(BROKER_DOWN - (time.monotonic() - stopped_at), 0))
        finally:
            started = system.agora("start", "nats")
            assert started.returncode == 0, started.stderr

        assert [a.status_code for a in answers] == [202] * ORDERS, [a.text for a in answers]
        orders = [shopper.wait_until_terminal(a.json()["id"], timeout=SHIPPED) for a in answers]
        confirmed = [o["id"] for o in orders if o["status"] == "CONFIRMED"]
        cancelled = [o["id"] for o in orders if o["status"] == "CANCELLED"]
        assert len(confirmed) + len(cancelled) == ORDERS, orders
        assert confirmed, orders

        def all_delivered() -> dict[str, list[dict[str, Any]]] | None:
            shipped = {order_id: shopper.shipments(order_id) for order_id in confirmed}
            done = all(s and s[0]["status"] == DELIVERED for s in shipped.values())
            return shipped if done else None

        shipped = wait_for("every confirmed order to be delivered", all_delivered, SHIPPED)
        assert {order_id: len(s) for order_id, s in shipped.items()} == dict.fromkeys(confirmed, 1)
        assert all(shopper.shipments(order_id) == [] for order_id in cancelled)
        shop.verify()
