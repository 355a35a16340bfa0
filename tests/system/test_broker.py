"""The broker under `agora up` dies, and no event is lost.

A durable pull consumer of the test's own listens for identity's UserRegistered. The embedded
nats-server is SIGKILLed; at once three users register through the gateway, and each gets 201
(identity keeps accepting writes: its outbox holds the events). `agora up` restarts the broker on
its port and data, the relay publishes what piled up, and the three UserRegistered events reach
the test's consumer, once each.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
import pytest

from agora.harness import RunningSystem, wait_for
from agora.messaging.envelope import CloudEvent

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

# nats, identity, catalog, inventory, payments, orders, cart, notifications, gateway
PROCESSES = 9
STREAM = "AGORA_IDENTITY"
SUBJECT = "agora.identity.events.UserRegistered.v1"
DELIVERY_BOUND = 60.0  # seconds for the events to arrive once the broker is back


@pytest.fixture
def system(tmp_path: Path) -> Iterator[RunningSystem]:
    env = {**os.environ, "AGORA_ADMIN_PASSWORD": "system-test admin passphrase"}
    with RunningSystem(tmp_path / "shop", env=env) as running:
        yield running


async def subscribe(url: str, durable: str) -> None:
    """Make the test's durable pull consumer; it stays on the broker when the test disconnects."""
    connection = await nats.connect(url, allow_reconnect=False, connect_timeout=5)
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


async def receive(url: str, durable: str, emails: set[str]) -> list[CloudEvent]:
    """What the durable consumer delivers of these users' registrations, until all are in or
    :data:`DELIVERY_BOUND` has passed."""
    received: list[CloudEvent] = []
    deadline = time.monotonic() + DELIVERY_BOUND
    connection = await nats.connect(url, connect_timeout=5)
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
    asyncio.run(subscribe(url, durable))
    emails = [f"outage-{i}-{uuid.uuid4().hex[:8]}@example.com" for i in range(3)]

    os.kill(broker["pid"], signal.SIGKILL)
    answers = asyncio.run(register(system.gateway_url, emails))

    assert [a.status_code for a in answers] == [201, 201, 201], [a.text for a in answers]

    def restarted() -> dict[str, Any] | None:
        now = system.process_of("nats")
        return now if now["pid"] != broker["pid"] and now["healthy"] else None

    back = wait_for("the broker to be restarted", restarted)
    assert back["port"] == broker["port"]
    assert system.state()["nats_url"] == url
    assert "nats[0] exited unexpectedly (killed by SIGKILL)" in system.printed()

    received = asyncio.run(receive(url, durable, set(emails)))

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
