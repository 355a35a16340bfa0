"""Events become messages: one per new user, one per order that ended and one per shipment the
carrier collected, in the user's mailbox, however often and in whatever order the events come."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from agora.messaging import CloudEvent
from agora.messaging.consumer import Poison
from agora_tools.testing import User, an_order
from contracts.shipping import ShipmentDispatched
from notifications.domain import InvalidEvent, Kind, Status

from .conftest import Bench, a_user, bench_on, dispatched


def a_shipment() -> str:
    """A new shipment's id, as shipping makes them (a UUID)."""
    return str(uuid.uuid4())


async def test_a_new_user_gets_a_welcome(bench: Bench) -> None:
    ada = a_user()

    await bench.register(ada)

    (message,) = await bench.mailbox(ada)
    assert message.kind is Kind.WELCOME
    assert message.order_id is None
    assert message.subject == "Welcome to Agora"
    assert f"Your account for {ada.email} is ready" in message.body


async def test_a_confirmed_order_gets_a_message_with_its_total(bench: Bench) -> None:
    ada, order_id = a_user(), an_order()

    await bench.confirm(order_id, ada, total=4250, currency="EUR")

    (message,) = await bench.mailbox(ada)
    assert message.kind is Kind.ORDER_CONFIRMED
    assert message.order_id == order_id
    assert message.subject == f"Your order {order_id} is confirmed"
    assert "your payment\nof EUR 42.50 went through" in message.body


async def test_a_cancelled_order_gets_a_message_with_the_reason_in_words(bench: Bench) -> None:
    ada, order_id = a_user(), an_order()

    await bench.cancel(order_id, ada, reason="payment_declined")

    (message,) = await bench.mailbox(ada)
    assert message.kind is Kind.ORDER_CANCELLED
    assert message.order_id == order_id
    assert message.subject == f"Your order {order_id} was cancelled"
    assert f"order {order_id} was cancelled because your card was declined." in message.body
    assert "payment_declined" not in message.body


async def test_an_event_delivered_twice_makes_one_message(bench: Bench) -> None:
    ada, order_id = a_user(), an_order()
    registered = await bench.register(ada)
    confirmed = await bench.confirm(order_id, ada)

    again = [await bench.bus.deliver(d.event) for d in (registered, confirmed, registered)]

    assert all(delivery.handled == () for delivery in again)
    assert sorted(m.kind for m in await bench.mailbox(ada)) == [
        Kind.ORDER_CONFIRMED,
        Kind.WELCOME,
    ]


async def test_a_second_event_about_the_same_order_makes_no_second_message(bench: Bench) -> None:
    ada, order_id = a_user(), an_order()
    await bench.confirm(order_id, ada, total=1000)

    # Different events (new ids, so the inbox lets them through) about the same order.
    resent = await bench.confirm(order_id, ada, total=1000)
    contradicting = await bench.cancel(order_id, ada, reason="customer_cancelled")
    await bench.register(ada)
    await bench.register(ada)

    assert resent.handled
    assert contradicting.handled
    mailbox = await bench.mailbox(ada)
    assert sorted(m.kind for m in mailbox) == [Kind.ORDER_CONFIRMED, Kind.WELCOME]
    (about_the_order,) = [m for m in mailbox if m.order_id == order_id]
    assert "EUR 10.00" in about_the_order.body


async def test_two_replicas_handling_events_about_one_order_at_once_make_one_message(
    bench: Bench,
) -> None:
    ada = a_user()
    orders = [an_order() for _ in range(5)]
    async with bench_on(bench.url) as other:
        await asyncio.gather(
            *(bench.confirm(order_id, ada) for order_id in orders),
            *(other.cancel(order_id, ada, reason="stock_timeout") for order_id in orders),
        )

    mailbox = await bench.mailbox(ada)
    assert sorted(m.order_id or "" for m in mailbox) == sorted(orders)


async def test_an_order_message_that_comes_before_the_address_is_kept(bench: Bench) -> None:
    ada, order_id = a_user(), an_order()

    await bench.cancel(order_id, ada, reason="stock_timeout")

    (message,) = await bench.mailbox(ada)
    assert message.kind is Kind.ORDER_CANCELLED
    assert message.delivery.status is Status.PENDING
    assert message.delivery.attempts == 0


async def test_users_have_mailboxes_of_their_own(bench: Bench) -> None:
    ada, bob = a_user(), a_user()
    await bench.register(ada)
    await bench.register(bob)
    await bench.confirm(an_order(), bob)

    assert [m.kind for m in await bench.mailbox(ada)] == [Kind.WELCOME]
    assert {m.user_id for m in await bench.mailbox(bob)} == {bob.id}
    assert len(await bench.mailbox()) == 3


async def test_an_event_naming_no_real_user_is_refused_and_leaves_nothing(bench: Bench) -> None:
    nobody = a_user()
    broken = User("user\x00", nobody.email, nobody.headers)

    with pytest.raises(InvalidEvent):
        await bench.confirm(an_order(), broken)

    assert await bench.mailbox() == []
    # Nor in the inbox: delivered again it fails again (the consumer retries it, then sets it
    # aside as a dead letter).
    with pytest.raises(InvalidEvent):
        await bench.bus.deliver(bench.bus.published[-1])


# --- shipments on their way --------------------------------------------------------------------


async def test_a_dispatched_shipment_gets_a_message_that_the_order_is_on_its_way(
    bench: Bench,
) -> None:
    ada, order_id, shipment_id = a_user(), an_order(), a_shipment()

    await bench.dispatch(
        shipment_id,
        order_id,
        ada,
        carrier="royal-mail",
        service_level="tracked-48",
        tracking_number="RM0123456789ABCDEF",
    )

    (message,) = await bench.mailbox(ada)
    assert message.kind is Kind.SHIPMENT_DISPATCHED
    assert (message.order_id, message.shipment_id) == (order_id, shipment_id)
    assert message.topic == f"shipment:{shipment_id}"
    assert message.subject == f"Your order {order_id} is on its way"
    assert "The carrier royal-mail\ncollected it" in message.body
    assert "by its tracked-48 service" in message.body
    assert "tracking number RM0123456789ABCDEF" in message.body
    assert message.delivery.status is Status.PENDING


async def test_a_dispatched_shipment_told_twice_makes_one_message(bench: Bench) -> None:
    ada, order_id, shipment_id = a_user(), an_order(), a_shipment()
    first = await bench.dispatch(shipment_id, order_id, ada, tracking_number="DH1")

    redelivered = await bench.bus.deliver(first.event)
    # A different event (a new id, so the inbox lets it through) about the same shipment.
    resent = await bench.dispatch(shipment_id, order_id, ada, tracking_number="DH2")

    assert redelivered.handled == ()
    assert resent.handled
    (message,) = await bench.mailbox(ada)
    assert message.shipment_id == shipment_id
    assert "tracking number DH1" in message.body


async def test_a_confirmed_order_and_its_shipment_each_get_their_message(bench: Bench) -> None:
    ada, order_id, shipment_id = a_user(), an_order(), a_shipment()
    await bench.register(ada)

    await bench.confirm(order_id, ada, total=4250)
    await bench.dispatch(shipment_id, order_id, ada)
    # Neither way round does one keep the other out, nor does a later ending of the order.
    await bench.cancel(order_id, ada, reason="customer_cancelled")

    mailbox = await bench.mailbox(ada)
    about = {m.kind: (m.order_id, m.shipment_id) for m in mailbox}
    assert about == {
        Kind.WELCOME: (None, None),
        Kind.ORDER_CONFIRMED: (order_id, None),
        Kind.SHIPMENT_DISPATCHED: (order_id, shipment_id),
    }
    assert len(mailbox) == 3


async def test_a_shipment_dispatched_before_its_order_is_confirmed_still_leaves_both(
    bench: Bench,
) -> None:
    ada, order_id, shipment_id = a_user(), an_order(), a_shipment()

    await bench.dispatch(shipment_id, order_id, ada)
    await bench.confirm(order_id, ada)

    assert sorted(m.kind for m in await bench.mailbox(ada)) == [
        Kind.ORDER_CONFIRMED,
        Kind.SHIPMENT_DISPATCHED,
    ]


async def test_two_shipments_of_one_order_get_a_message_each(bench: Bench) -> None:
    ada, order_id = a_user(), an_order()
    shipments = [a_shipment(), a_shipment()]

    for shipment_id in shipments:
        await bench.dispatch(shipment_id, order_id, ada)

    mailbox = await bench.mailbox(ada)
    assert sorted(m.shipment_id or "" for m in mailbox) == sorted(shipments)
    assert {m.order_id for m in mailbox} == {order_id}


async def test_two_replicas_handling_one_shipment_at_once_make_one_message(bench: Bench) -> None:
    ada = a_user()
    shipments = [(a_shipment(), an_order()) for _ in range(5)]
    async with bench_on(bench.url) as other:
        await asyncio.gather(
            *(bench.dispatch(shipment_id, order_id, ada) for shipment_id, order_id in shipments),
            *(other.dispatch(shipment_id, order_id, ada) for shipment_id, order_id in shipments),
        )

    mailbox = await bench.mailbox(ada)
    assert sorted(m.shipment_id or "" for m in mailbox) == sorted(s for s, _ in shipments)


@pytest.mark.parametrize(
    "change",
    [
        {"shipment_id": ""},
        {"shipment_id": "s\x00"},
        {"order_id": ""},
        {"user_id": ""},
        {"tracking_number": ""},
        {"carrier": "dhl\r\nBcc: eve@example.org"},
    ],
    ids=repr,
)
async def test_a_dispatched_shipment_naming_nothing_real_is_refused_and_leaves_nothing(
    bench: Bench, change: dict[str, str]
) -> None:
    event = dispatched(a_shipment(), an_order(), a_user().id).model_copy(update=change)

    with pytest.raises(InvalidEvent):
        await bench.bus.publish(event, aggregate=event.shipment_id or "none")

    assert await bench.mailbox() == []
    # Nor in the inbox: delivered again it fails again (the consumer retries it, then sets it
    # aside as a dead letter).
    with pytest.raises(InvalidEvent):
        await bench.bus.deliver(bench.bus.published[-1])


@pytest.mark.parametrize("missing", ["shipment_id", "order_id", "user_id", "tracking_number"])
async def test_a_dispatched_shipment_missing_a_field_is_no_event_and_leaves_nothing(
    bench: Bench, missing: str
) -> None:
    data = dispatched(a_shipment(), an_order(), a_user().id).model_dump(mode="json")
    del data[missing]
    event = CloudEvent(source="shipping", type=ShipmentDispatched.type, data=data)

    # Not the event at all: the consumer sets it aside as a dead letter at its first delivery.
    with pytest.raises(Poison):
        await bench.bus.deliver(event)

    assert await bench.mailbox() == []
