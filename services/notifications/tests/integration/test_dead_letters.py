"""A shipment's news through a real broker (a nats-server of this module's own): a valid
``ShipmentDispatched`` makes its message, and one notifications cannot use is set aside as a dead
letter, as the consumers do every other event this service refuses, while the rest flow."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from agora.db import UnitOfWork
from agora.messaging import CloudEvent
from agora.messaging.broker import Broker
from agora.messaging.consumer import Consumers
from agora.messaging.deadletters import DeadLetter, dead_letters
from agora.messaging.envelope import envelope
from agora_tools.testing import NatsServer, an_order, connected, eventually, quick_consumers
from contracts.base import subject_of
from contracts.shipping import ShipmentDispatched
from notifications import application
from notifications.adapters import JinjaTemplates, SqlMessages
from notifications.application import MailboxQuery
from notifications.domain import Kind, Message
from notifications.entrypoints import subscriptions

from .conftest import PATIENCE, a_user, dispatched

# A hang should fail fast, not after the suite's five minutes.
pytestmark = pytest.mark.timeout(60)

SUBJECT = subject_of(ShipmentDispatched)


@pytest.fixture
async def broker(nats_server: NatsServer) -> AsyncIterator[Broker]:
    broker = await connected(Broker(nats_server.url, name="test", connect_timeout=1.0))
    # Shipping's stream, as shipping makes it when it starts.
    await broker.ensure_stream("shipping")
    yield broker
    await broker.close()


def _nothing() -> None:
    """No sender to wake."""


def shipping_consumer(uow: UnitOfWork, broker: Broker) -> Consumers:
    """Notifications' consumer of ShipmentDispatched, quick to redeliver."""
    parts = application.Parts(SqlMessages(), JinjaTemplates(), _nothing)
    (subscription,) = [s for s in subscriptions(parts) if s.event is ShipmentDispatched]
    return quick_consumers("notifications", uow, broker, [subscription], max_deliver=2)


async def publish(broker: Broker, event: CloudEvent) -> None:
    await broker.js.publish(SUBJECT, event.to_bytes(), headers={"Nats-Msg-Id": event.id})


async def test_a_shipment_notifications_cannot_use_is_dead_lettered_and_the_rest_flow(
    broker: Broker, migrated: str
) -> None:
    ada, order_id = a_user(), an_order()
    empty_id = envelope(
        dispatched(str(uuid.uuid4()), order_id, ada.id).model_copy(update={"shipment_id": ""}),
        source="shipping",
        subject="",
    )
    data = dispatched(str(uuid.uuid4()), order_id, ada.id).model_dump(mode="json")
    del data["tracking_number"]
    no_tracking = CloudEvent(source="shipping", type=ShipmentDispatched.type, data=data)
    shipment_id = str(uuid.uuid4())
    good = envelope(
        dispatched(shipment_id, order_id, ada.id), source="shipping", subject=shipment_id
    )
    uow = UnitOfWork(migrated, source="notifications")
    consumers = shipping_consumer(uow, broker)
    for event in (empty_id, no_tracking, good):
        await publish(broker, event)

    async def mailbox() -> list[Message]:
        query = MailboxQuery(limit=100, user_id=ada.id)
        return (await uow.query(application.list_messages, SqlMessages(), query)).items

    async def letters() -> dict[str, DeadLetter]:
        return {letter.id: letter for letter in await dead_letters(broker.js)}

    async def both_dead_and_one_message() -> bool:
        return {empty_id.id, no_tracking.id} <= set(await letters()) and len(await mailbox()) == 1

    running = asyncio.create_task(consumers.run())
    try:
        await eventually(
            both_dead_and_one_message,
            "the bad shipments were not set aside, or the good one made no message",
            within=PATIENCE * 3,
        )
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await uow.dispose()

    (message,) = await mailbox()
    assert (message.kind, message.shipment_id) == (Kind.SHIPMENT_DISPATCHED, shipment_id)
    found = await letters()
    # Refused by notifications' rules: tried again, then set aside.
    assert found[empty_id.id].delivered == 2
    assert "a shipment id is 1 to 100 printable characters" in found[empty_id.id].error
    assert found[empty_id.id].consumer == "notifications__tell_shipment_dispatched"
    # Not the event at all: set aside at once.
    assert found[no_tracking.id].delivered == 1
    assert "tracking_number" in found[no_tracking.id].error
