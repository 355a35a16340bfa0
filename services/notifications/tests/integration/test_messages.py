"""Events become messages: one per new user and one per order that ended, in the user's mailbox,
however often and in whatever order the events come."""

from __future__ import annotations

import asyncio

import pytest

from agora_tools.testing import User, an_order
from notifications.domain import InvalidEvent, Kind, Status

from .conftest import Bench, a_user, bench_on


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
