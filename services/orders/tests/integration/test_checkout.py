"""The checkout saga end to end in the orders service: the test plays inventory and payments,
reading the commands orders put in its outbox and publishing the answers into its
subscriptions, and moves time on to fire the deadline timer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from agora_tools.testing import Headers
from contracts.inventory import (
    StockCommitted,
    StockLine,
    StockRejected,
    StockReleased,
    StockReserved,
)
from contracts.payments import (
    PaymentAuthorized,
    PaymentCaptured,
    PaymentDeclined,
    PaymentFailed,
    PaymentRefunded,
    PaymentVoided,
)

from .conftest import TOTAL, Checkout

LINES = (StockLine(sku="KIT-WOK-32", quantity=2), StockLine(sku="COF-PRESS", quantity=1))


def reserved(order_id: str) -> StockReserved:
    expires = datetime.now(UTC) + timedelta(minutes=15)
    return StockReserved(order_id=order_id, lines=LINES, expires_at=expires)


def authorized(order_id: str) -> PaymentAuthorized:
    return PaymentAuthorized(
        order_id=order_id,
        payment_id="pay-1",
        amount=TOTAL,
        currency="EUR",
        card_brand="visa",
        card_last4="4242",
    )


def captured(order_id: str) -> PaymentCaptured:
    return PaymentCaptured(order_id=order_id, payment_id="pay-1", amount=TOTAL, currency="EUR")


async def authorizing(checkout: Checkout, headers: Headers) -> dict[str, Any]:
    """An order whose stock is reserved and whose payment is being authorized."""
    order = await checkout.place(headers)
    assert await checkout.names() == ["OrderPlaced", "ReserveStock"]
    await checkout.answer(reserved(order["id"]), order["id"])
    assert await checkout.names() == ["AuthorizePayment"]
    return order


async def completing(checkout: Checkout, headers: Headers) -> dict[str, Any]:
    """An order whose payment is authorized: capture and commit are on their way."""
    order = await authorizing(checkout, headers)
    await checkout.answer(authorized(order["id"]), order["id"])
    assert sorted(await checkout.names()) == ["CapturePayment", "CommitStock"]
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

    await checkout.answer(StockCommitted(order_id=order["id"], lines=LINES), order["id"])
    final = await checkout.order(order["id"], alice)
    assert final["status"] == "CONFIRMED"
    assert final["reason"] is None
    (confirmed,) = await checkout.sent()
    assert confirmed.name == "OrderConfirmed"
    assert confirmed.event.data["total"] == TOTAL


async def test_out_of_stock_cancels_the_order_at_once(checkout: Checkout, alice: Headers) -> None:
    order = await checkout.place(alice)
    await checkout.sent()

    await checkout.answer(StockRejected(order_id=order["id"], reason="out_of_stock"), order["id"])

    final = await checkout.order(order["id"], alice)
    assert (final["status"], final["reason"]) == ("CANCELLED", "out_of_stock")
    (cancelled,) = await checkout.sent()
    assert cancelled.name == "OrderCancelled"
    assert cancelled.event.data["reason"] == "out_of_stock"


async def test_a_declined_payment_releases_the_stock_and_then_cancels(
    checkout: Checkout, alice: Headers
) -> None:
    order = await authorizing(checkout, alice)

    await checkout.answer(
        PaymentDeclined(order_id=order["id"], payment_id="pay-1", reason="declined"), order["id"]
    )
    assert await checkout.names() == ["ReleaseStock"]
    assert (await checkout.order(order["id"], alice))["status"] == "PENDING"

    await checkout.answer(
        StockReleased(order_id=order["id"], reason="requested", lines=LINES), order["id"]
    )
    final = await checkout.order(order["id"], alice)
    assert (final["status"], final["reason"]) == ("CANCELLED", "payment_declined")
    assert await checkout.names() == ["OrderCancelled"]


async def test_a_failed_payment_is_tried_again_after_a_pause(
    checkout: Checkout, alice: Headers
) -> None:
    order = await authorizing(checkout, alice)

    await checkout.answer(
        PaymentFailed(order_id=order["id"], payment_id="pay-1", reason="processor_error"),
        order["id"],
    )
    assert await checkout.names() == []

    await checkout.tick(checkout.settings.retry_backoff)
    assert await checkout.names() == ["AuthorizePayment"]
    assert (await checkout.order(order["id"], alice))["checkout"] == {
        "step": "authorizing",
        "attempts": 2,
    }


async def test_a_reservation_that_never_comes_is_resent_then_released_and_the_order_ends(
    checkout: Checkout, alice: Headers
) -> None:
    order = await checkout.place(alice)
    await checkout.sent()
    timeout = checkout.settings.step_timeout

    for attempt in (2, 3):
        await checkout.tick(timeout)
        assert await checkout.names() == ["ReserveStock"]
        assert (await checkout.order(order["id"], alice))["checkout"]["attempts"] == attempt

    await checkout.tick(timeout)
    assert await checkout.names() == ["ReleaseStock"]
    await checkout.answer(StockReleased(order_id=order["id"], reason="requested"), order["id"])

    final = await checkout.order(order["id"], alice)
    assert (final["status"], final["reason"]) == ("CANCELLED", "stock_timeout")


async def test_an_authorization_that_never_comes_ends_in_void_release_and_cancel(
    checkout: Checkout, alice: Headers
) -> None:
    order = await authorizing(checkout, alice)
    timeout = checkout.settings.step_timeout

    for _ in range(checkout.settings.authorize_attempts - 1):
        await checkout.tick(timeout)
        assert await checkout.names() == ["AuthorizePayment"]
    await checkout.tick(timeout)
    assert sorted(await checkout.names()) == ["ReleaseStock", "VoidPayment"]

    await checkout.answer(PaymentVoided(order_id=order["id"]), order["id"])
    assert (await checkout.order(order["id"], alice))["status"] == "PENDING"
    await checkout.answer(StockReleased(order_id=order["id"], reason="requested"), order["id"])

    final = await checkout.order(order["id"], alice)
    assert (final["status"], final["reason"]) == ("CANCELLED", "payment_timeout")


async def test_a_completion_whose_answer_does_not_come_is_resent_until_it_does(
    checkout: Checkout, alice: Headers
) -> None:
    order = await completing(checkout, alice)
    await checkout.answer(captured(order["id"]), order["id"])

    for _ in range(5):
        await checkout.tick(checkout.settings.completion_backoff_max)
        assert await checkout.names() == ["CommitStock"]

    await checkout.answer(StockCommitted(order_id=order["id"], lines=LINES), order["id"])
    assert (await checkout.order(order["id"], alice))["status"] == "CONFIRMED"


async def test_nothing_is_resent_before_a_deadline(checkout: Checkout, alice: Headers) -> None:
    await checkout.place(alice)
    await checkout.sent()

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
    await checkout.answer(PaymentVoided(order_id=order["id"], payment_id="pay-1"), order["id"])
    await checkout.answer(
        StockReleased(order_id=order["id"], reason="requested", lines=LINES), order["id"]
    )

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
    order = await checkout.place(alice)
    await checkout.sent()
    delivery = await checkout.bus.publish(reserved(order["id"]), aggregate=order["id"])

    again = await checkout.bus.deliver(delivery.event)

    assert again.handled == ()
    assert await checkout.names() == ["AuthorizePayment"]


async def test_a_reservation_expired_before_the_commit_is_refunded_and_cancelled(
    checkout: Checkout, alice: Headers
) -> None:
    order = await completing(checkout, alice)
    await checkout.answer(captured(order["id"]), order["id"])

    await checkout.answer(
        StockRejected(order_id=order["id"], reason="reservation_expired"), order["id"]
    )
    assert await checkout.names() == ["RefundPayment"]
    await checkout.answer(
        PaymentRefunded(order_id=order["id"], payment_id="pay-1", amount=TOTAL, currency="EUR"),
        order["id"],
    )

    final = await checkout.order(order["id"], alice)
    assert (final["status"], final["reason"]) == ("CANCELLED", "reservation_expired")


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
