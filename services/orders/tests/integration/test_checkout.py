"""The checkout saga end to end in the orders service: the test plays inventory and payments,
reading the commands orders put in its outbox and publishing the answers into its
subscriptions, and moves time on to fire the deadline timer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agora.messaging.envelope import EventModel
from agora_tools.testing import Headers
from contracts import inventory, payments

from .conftest import ALICE, TOTAL, Checkout

LINES = (
    inventory.StockLine(sku="KIT-WOK-32", quantity=2),
    inventory.StockLine(sku="COF-PRESS", quantity=1),
)
# Where an order goes when it is not Ada's default address: with a second line, abroad.
GRACE = {
    "name": "Grace Hopper",
    "line1": "1 Compiler Way",
    "line2": "Building 2",
    "city": "Arlington",
    "postal_code": "22201",
    "country": "US",
}


def reserved(order_id: str) -> inventory.StockReserved:
    expires = datetime.now(UTC) + timedelta(minutes=15)
    return inventory.StockReserved(order_id=order_id, lines=LINES, expires_at=expires)


def authorized(order_id: str) -> payments.PaymentAuthorized:
    return payments.PaymentAuthorized(
        order_id=order_id,
        payment_id="pay-1",
        amount=TOTAL,
        currency="EUR",
        card_brand="visa",
        card_last4="4242",
    )


def captured(order_id: str) -> payments.PaymentCaptured:
    return payments.PaymentCaptured(
        order_id=order_id, payment_id="pay-1", amount=TOTAL, currency="EUR"
    )


def committed(order_id: str) -> inventory.StockCommitted:
    return inventory.StockCommitted(order_id=order_id, lines=LINES)


# An answer of inventory's or payments', for the order of this id.
Answer = Callable[[str], EventModel]
# How far along a test's order is before the test begins: each gives the order.
Start = Callable[[Checkout, Headers], Awaitable[dict[str, Any]]]


def declined(order_id: str) -> payments.PaymentDeclined:
    return payments.PaymentDeclined(order_id=order_id, payment_id="pay-1", reason="declined")


def expired(order_id: str) -> inventory.StockRejected:
    return inventory.StockRejected(order_id=order_id, reason="reservation_expired")


def released(order_id: str) -> inventory.StockReleased:
    return inventory.StockReleased(order_id=order_id, reason="requested")


def released_all(order_id: str) -> inventory.StockReleased:
    return inventory.StockReleased(order_id=order_id, reason="requested", lines=LINES)


def voided(order_id: str) -> payments.PaymentVoided:
    return payments.PaymentVoided(order_id=order_id)


def refunded(order_id: str) -> payments.PaymentRefunded:
    return payments.PaymentRefunded(
        order_id=order_id, payment_id="pay-1", amount=TOTAL, currency="EUR"
    )


async def placing(checkout: Checkout, headers: Headers) -> dict[str, Any]:
    """An order just placed, whose stock is being reserved."""
    order = await checkout.place(headers)
    assert await checkout.names() == ["OrderPlaced", "ReserveStock"]
    return order


async def authorizing(checkout: Checkout, headers: Headers) -> dict[str, Any]:
    """An order whose stock is reserved and whose payment is being authorized."""
    order = await placing(checkout, headers)
    await checkout.answer(reserved(order["id"]), order["id"])
    assert await checkout.names() == ["AuthorizePayment"]
    return order


async def completing(checkout: Checkout, headers: Headers) -> dict[str, Any]:
    """An order whose payment is authorized: capture and commit are on their way."""
    order = await authorizing(checkout, headers)
    await checkout.answer(authorized(order["id"]), order["id"])
    assert sorted(await checkout.names()) == ["CapturePayment", "CommitStock"]
    return order


async def committing(checkout: Checkout, headers: Headers) -> dict[str, Any]:
    """An order whose payment is captured and whose stock is still to be committed."""
    order = await completing(checkout, headers)
    await checkout.answer(captured(order["id"]), order["id"])
    assert await checkout.names() == []
    return order


async def test_an_order_is_confirmed_once_its_capture_and_its_commit_are_acknowledged(
    checkout: Checkout, alice: Headers
) -> None:
    order = await checkout.place(alice)
    placed, reserve = await checkout.sent()
    assert (placed.name, reserve.name) == ("OrderPlaced", "ReserveStock")

    await checkout.answer(reserved(order["id"]), order["id"])
    (authorize,) = await checkout.sent()
    assert authorize.name == "AuthorizePayment"
    assert authorize.event.data["amount"] == TOTAL
    assert authorize.event.data["currency"] == "EUR"
    assert authorize.event.data["user_id"] == order["user_id"]
    assert authorize.event.data["card_token"].startswith("tok_")
    assert (await checkout.order(order["id"], alice))["checkout"]["step"] == "authorizing"

    await checkout.answer(authorized(order["id"]), order["id"])
    assert sorted(await checkout.names()) == ["CapturePayment", "CommitStock"]

    await checkout.answer(captured(order["id"]), order["id"])
    assert (await checkout.order(order["id"], alice))["status"] == "PENDING"

    await checkout.answer(inventory.StockCommitted(order_id=order["id"], lines=LINES), order["id"])
    final = await checkout.order(order["id"], alice)
    assert final["status"] == "CONFIRMED"
    assert final["reason"] is None
    confirmed, confirmed_v2 = await checkout.sent()
    assert (confirmed.event.type, confirmed_v2.event.type) == (
        "orders.OrderConfirmed.v1",
        "orders.OrderConfirmed.v2",
    )
    assert confirmed.event.data["total"] == TOTAL


async def test_a_confirmed_order_is_announced_once_in_each_version_v2_with_where_it_goes(
    checkout: Checkout, alice: Headers
) -> None:
    order = await checkout.place(alice, shipping_address=GRACE)
    for answer in (reserved, authorized, captured, committed):
        await checkout.answer(answer(order["id"]), order["id"])

    sent = [message for message in await checkout.sent() if message.name == "OrderConfirmed"]
    assert [message.event.type for message in sent] == [
        "orders.OrderConfirmed.v1",
        "orders.OrderConfirmed.v2",
    ]
    v1, v2 = (message.event for message in sent)
    assert v1.data == {"order_id": order["id"], "user_id": ALICE, "total": TOTAL, "currency": "EUR"}
    assert v2.data == {
        **v1.data,
        "lines": [
            {
                "sku": "KIT-WOK-32",
                "name": "Carbon Steel Wok 32 cm",
                "quantity": 2,
                "unit_price": 5490,
            },
            {"sku": "COF-PRESS", "name": "French Press 1 L", "quantity": 1, "unit_price": 3490},
        ],
        "shipping_address": GRACE,
    }
    assert order["shipping_address"] == GRACE
    # Two events about one order, each de-duplicated by the broker on its own id.
    assert v1.subject == v2.subject == order["id"]
    assert v1.id != v2.id


async def test_out_of_stock_cancels_the_order_at_once(checkout: Checkout, alice: Headers) -> None:
    order = await placing(checkout, alice)

    await checkout.answer(
        inventory.StockRejected(order_id=order["id"], reason="out_of_stock"), order["id"]
    )

    final = await checkout.order(order["id"], alice)
    assert (final["status"], final["reason"]) == ("CANCELLED", "out_of_stock")
    (cancelled,) = await checkout.sent()
    assert cancelled.name == "OrderCancelled"
    assert cancelled.event.data["reason"] == "out_of_stock"


async def test_a_failed_payment_is_tried_again_after_a_pause(
    checkout: Checkout, alice: Headers
) -> None:
    order = await authorizing(checkout, alice)

    await checkout.answer(
        payments.PaymentFailed(order_id=order["id"], payment_id="pay-1", reason="processor_error"),
        order["id"],
    )
    assert await checkout.names() == []

    await checkout.tick(checkout.settings.retry_backoff)
    assert await checkout.names() == ["AuthorizePayment"]
    assert (await checkout.order(order["id"], alice))["checkout"] == {
        "step": "authorizing",
        "attempts": 2,
    }


@pytest.mark.parametrize(
    ("start", "turn", "compensation", "acknowledgement", "reason"),
    [
        pytest.param(
            authorizing,
            declined,
            "ReleaseStock",
            released_all,
            "payment_declined",
            id="a-declined-payment-releases-the-stock",
        ),
        pytest.param(
            committing,
            expired,
            "RefundPayment",
            refunded,
            "reservation_expired",
            id="a-reservation-expired-before-the-commit-refunds-the-payment",
        ),
    ],
)
async def test_a_turn_for_the_worse_is_compensated_and_then_the_order_cancelled(
    checkout: Checkout,
    alice: Headers,
    start: Start,
    turn: Answer,
    compensation: str,
    acknowledgement: Answer,
    reason: str,
) -> None:
    order = await start(checkout, alice)

    await checkout.answer(turn(order["id"]), order["id"])
    assert await checkout.names() == [compensation]
    assert (await checkout.order(order["id"], alice))["status"] == "PENDING"

    await checkout.answer(acknowledgement(order["id"]), order["id"])
    final = await checkout.order(order["id"], alice)
    assert (final["status"], final["reason"]) == ("CANCELLED", reason)
    assert await checkout.names() == ["OrderCancelled"]


@pytest.mark.parametrize(
    ("start", "request_sent", "compensations", "acknowledgements", "reason"),
    [
        pytest.param(
            placing,
            "ReserveStock",
            ["ReleaseStock"],
            [released],
            "stock_timeout",
            id="a-reservation-is-released",
        ),
        pytest.param(
            authorizing,
            "AuthorizePayment",
            ["ReleaseStock", "VoidPayment"],
            [voided, released],
            "payment_timeout",
            id="an-authorization-is-voided-and-the-stock-released",
        ),
    ],
)
async def test_a_request_never_answered_is_resent_then_compensated_and_the_order_ends(
    checkout: Checkout,
    alice: Headers,
    start: Start,
    request_sent: str,
    compensations: list[str],
    acknowledgements: list[Answer],
    reason: str,
) -> None:
    order = await start(checkout, alice)
    timeout = checkout.settings.step_timeout

    # Three attempts in all, as the settings allow by default.
    for attempt in (2, 3):
        await checkout.tick(timeout)
        assert await checkout.names() == [request_sent]
        assert (await checkout.order(order["id"], alice))["checkout"]["attempts"] == attempt
    await checkout.tick(timeout)
    assert sorted(await checkout.names()) == compensations

    for acknowledgement in acknowledgements:
        assert (await checkout.order(order["id"], alice))["status"] == "PENDING"
        await checkout.answer(acknowledgement(order["id"]), order["id"])

    final = await checkout.order(order["id"], alice)
    assert (final["status"], final["reason"]) == ("CANCELLED", reason)


async def test_a_completion_whose_answer_does_not_come_is_resent_until_it_does(
    checkout: Checkout, alice: Headers
) -> None:
    order = await committing(checkout, alice)

    for _ in range(5):
        await checkout.tick(checkout.settings.completion_backoff_max)
        assert await checkout.names() == ["CommitStock"]

    await checkout.answer(inventory.StockCommitted(order_id=order["id"], lines=LINES), order["id"])
    assert (await checkout.order(order["id"], alice))["status"] == "CONFIRMED"


async def test_nothing_is_resent_before_a_deadline(checkout: Checkout, alice: Headers) -> None:
    await placing(checkout, alice)

    assert await checkout.tick(checkout.settings.step_timeout - 0.01) == 0
    assert await checkout.names() == []


async def test_a_customer_cancels_while_the_payment_is_authorized_and_a_late_answer_is_ignored(
    checkout: Checkout, alice: Headers
) -> None:
    order = await authorizing(checkout, alice)

    reply = await checkout.http.post(f"/orders/{order['id']}/cancel", headers=alice)
    assert reply.status_code == 200
    assert reply.json()["status"] == "PENDING"
    assert sorted(await checkout.names()) == ["ReleaseStock", "VoidPayment"]

    # The authorization was on its way before the void: it changes nothing, no capture follows.
    await checkout.answer(authorized(order["id"]), order["id"])
    assert await checkout.names() == []
    await checkout.answer(
        payments.PaymentVoided(order_id=order["id"], payment_id="pay-1"), order["id"]
    )
    await checkout.answer(released_all(order["id"]), order["id"])

    final = await checkout.order(order["id"], alice)
    assert (final["status"], final["reason"]) == ("CANCELLED", "customer_cancelled")
    assert await checkout.names() == ["OrderCancelled"]


async def test_an_order_being_charged_cannot_be_cancelled(
    checkout: Checkout, alice: Headers
) -> None:
    order = await completing(checkout, alice)

    reply = await checkout.http.post(f"/orders/{order['id']}/cancel", headers=alice)

    assert reply.status_code == 409
    assert reply.json()["type"] == "/problems/order-charged"
    assert await checkout.names() == []


async def test_a_repeated_answer_is_applied_once(checkout: Checkout, alice: Headers) -> None:
    order = await placing(checkout, alice)
    delivery = await checkout.bus.publish(reserved(order["id"]), aggregate=order["id"])

    again = await checkout.bus.deliver(delivery.event)

    assert again.handled == ()
    assert await checkout.names() == ["AuthorizePayment"]


async def test_an_answer_for_an_order_orders_does_not_know_is_dropped(checkout: Checkout) -> None:
    delivery = await checkout.bus.publish(reserved("no-such-order"), aggregate="no-such-order")

    assert delivery.handled
    assert await checkout.names() == []


async def test_every_command_of_a_checkout_stays_in_its_trace(
    checkout: Checkout, alice: Headers
) -> None:
    order = await checkout.place(alice)
    trace_id = order["trace_id"]
    _placed, reserve = await checkout.sent()
    assert reserve.traceparent is not None
    assert reserve.traceparent.split("-")[1] == trace_id

    # A resend made by the timer, far from the request that placed the order.
    await checkout.tick(checkout.settings.step_timeout)
    (again,) = await checkout.sent()

    assert again.name == "ReserveStock"
    assert again.traceparent is not None
    assert again.traceparent.split("-")[1] == trace_id
