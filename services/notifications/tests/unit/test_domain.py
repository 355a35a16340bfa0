"""Notifications' rules: which message an event makes, how money and reasons read, and how a
message's mail is retried."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import String

from agora import cursor as paging
from agora.cursor import InvalidCursor
from notifications import domain
from notifications.adapters import messages as table
from notifications.application import CURSORS
from notifications.domain import (
    PAGE_MAX,
    REASONS,
    RETRY_LONGEST,
    Cursor,
    Delivery,
    InvalidEvent,
    Kind,
    Letter,
    Message,
    Status,
    mail_id,
    money,
    reason_in_words,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (4250, "EUR", "EUR 42.50"),
        (5, "EUR", "EUR 0.05"),
        (0, "USD", "USD 0.00"),
        (123_456_789, "GBP", "GBP 1,234,567.89"),
        (-250, "EUR", "EUR -2.50"),
        (1500, "JPY", "JPY 1,500"),
        (1234, "KWD", "KWD 1.234"),
        (1999, "XYZ", "XYZ 19.99"),
    ],
)
def test_money_is_shown_in_major_units_with_its_currency(
    amount: int, currency: str, shown: str
) -> None:
    assert money(amount, currency) == shown


@pytest.mark.parametrize("reason", sorted(REASONS))
def test_every_known_cancellation_reason_reads_as_plain_words(reason: str) -> None:
    words = reason_in_words(reason)

    # They complete "Your order was cancelled because ...".
    assert "_" not in words
    assert words[0].islower()
    assert not words.endswith(".")


def test_the_reasons_orders_gives_are_all_known() -> None:
    assert set(REASONS) == {
        "out_of_stock",
        "payment_declined",
        "payment_failed",
        "customer_cancelled",
        "stock_timeout",
        "payment_timeout",
        "reservation_expired",
    }


def test_a_reason_not_known_yet_still_reads_as_a_sentence() -> None:
    assert reason_in_words("fraud_suspected") == ("of an issue with the order (fraud suspected)")
    assert reason_in_words("Something <odd>\n") == "of an issue with the order"
    assert reason_in_words("") == "of an issue with the order"


def test_a_welcome_is_about_the_user_and_an_order_message_about_the_order() -> None:
    welcome = domain.welcome("u-1", "ada@example.org")
    confirmed = domain.order_confirmed("o-1", "u-1", 4250, "EUR")
    cancelled = domain.order_cancelled("o-1", "u-1", "out_of_stock")

    assert (welcome.kind, welcome.topic, welcome.order_id) == (Kind.WELCOME, "welcome", None)
    assert (confirmed.kind, confirmed.topic) == (Kind.ORDER_CONFIRMED, "order:o-1")
    # An order ends once: whichever way, its messages share one topic.
    assert cancelled.topic == confirmed.topic
    assert confirmed.facts == {"order_id": "o-1", "total": "EUR 42.50"}
    assert cancelled.facts == {"order_id": "o-1", "reason": REASONS["out_of_stock"]}
    assert welcome.facts == {"email": "ada@example.org"}


def test_a_dispatched_shipment_is_about_the_shipment_and_names_its_order() -> None:
    note = domain.shipment_dispatched("s-1", "o-1", "u-1", "dhl", "standard", "DH0123456789ABCDEF")

    assert (note.kind, note.user_id, note.order_id) == (Kind.SHIPMENT_DISPATCHED, "u-1", "o-1")
    assert (note.shipment_id, note.topic) == ("s-1", "shipment:s-1")
    assert note.facts == {
        "order_id": "o-1",
        "carrier": "dhl",
        "service_level": "standard",
        "tracking_number": "DH0123456789ABCDEF",
    }


def test_an_order_and_its_shipment_are_two_topics_so_two_messages() -> None:
    confirmed = domain.order_confirmed("o-1", "u-1", 4250, "EUR")
    cancelled = domain.order_cancelled("o-1", "u-1", "out_of_stock")
    dispatched = domain.shipment_dispatched("s-1", "o-1", "u-1", "dhl", "standard", "DH1")
    again = domain.shipment_dispatched("s-1", "o-1", "u-1", "dhl", "standard", "DH1")
    other = domain.shipment_dispatched("s-2", "o-1", "u-1", "dhl", "standard", "DH2")

    assert dispatched.topic not in {confirmed.topic, cancelled.topic}
    assert again.topic == dispatched.topic
    assert other.topic != dispatched.topic
    # Only a shipment's message names a shipment.
    assert confirmed.shipment_id is None
    assert cancelled.shipment_id is None
    assert domain.welcome("u-1", "ada@example.org").shipment_id is None


def test_the_longest_topic_and_kind_fit_their_columns() -> None:
    longest = domain.shipment_dispatched("s" * domain.SHIPMENT_ID_MAX, "o-1", "u-1", "d", "s", "t")
    order = domain.order_confirmed("o" * domain.ORDER_ID_MAX, "u-1", 1, "EUR")

    assert max(len(longest.topic), len(order.topic)) <= _length("topic")
    assert max(len(kind.value) for kind in Kind) <= _length("kind")


def _length(column: str) -> int:
    kind = table.c[column].type
    assert isinstance(kind, String)
    assert kind.length is not None
    return kind.length


def test_a_shipment_message_keeps_its_shipment() -> None:
    note = domain.shipment_dispatched("s-1", "o-1", "u-1", "dhl", "standard", "DH1")

    message = Message.write("m-1", note, Letter("Subject", "Body\n"), NOW)

    assert (message.kind, message.topic) == (Kind.SHIPMENT_DISPATCHED, "shipment:s-1")
    assert (message.order_id, message.shipment_id) == ("o-1", "s-1")


def _dispatched(**change: str) -> object:
    values = {
        "shipment_id": "s-1",
        "order_id": "o-1",
        "user_id": "u-1",
        "carrier": "dhl",
        "service_level": "standard",
        "tracking_number": "DH1",
    }
    return domain.shipment_dispatched(**(values | change))


@pytest.mark.parametrize(
    "change",
    [
        {"shipment_id": ""},
        {"shipment_id": "s" * 101},
        {"shipment_id": "s-1\n"},
        {"order_id": ""},
        {"order_id": "o\x00"},
        {"user_id": ""},
        {"user_id": "u" * 101},
        {"carrier": ""},
        {"carrier": "   "},
        {"service_level": "standard\r\nBcc: eve@example.org"},
        {"tracking_number": ""},
        {"tracking_number": "T" * 101},
    ],
    ids=repr,
)
def test_a_dispatched_shipment_that_names_no_shipment_order_or_user_is_refused(
    change: dict[str, str],
) -> None:
    with pytest.raises(InvalidEvent):
        _dispatched(**change)


@pytest.mark.parametrize(
    "make",
    [
        lambda: domain.welcome("", "ada@example.org"),
        lambda: domain.welcome("u" * 101, "ada@example.org"),
        lambda: domain.welcome("u-1", "not-an-address"),
        lambda: domain.welcome("u-1", "@example.org"),
        lambda: domain.welcome("u-1", "ada@"),
        lambda: domain.welcome("u-1", "ada@example.org\r\nBcc: eve@example.org"),
        lambda: domain.welcome("u-1", "a" * 310 + "@example.org"),
        lambda: domain.welcome("u-\x00", "ada@example.org"),
        lambda: domain.order_confirmed("", "u-1", 100, "EUR"),
        lambda: domain.order_confirmed("o-1\n", "u-1", 100, "EUR"),
        lambda: domain.order_cancelled("o" * 101, "u-1", "out_of_stock"),
    ],
)
def test_an_event_that_names_no_one_or_no_order_is_refused(make: object) -> None:
    assert callable(make)
    with pytest.raises(InvalidEvent):
        make()


def test_a_subject_is_one_line_and_a_body_ends_with_one_line_break() -> None:
    letter = Letter.of("Your order\r\nBcc: eve@example.org  is confirmed\n", "\nHello,\n\n\n")

    assert letter.subject == "Your order Bcc: eve@example.org is confirmed"
    assert letter.body == "Hello,\n"


def test_a_new_message_is_pending_and_due_at_once() -> None:
    note = domain.order_confirmed("o-1", "u-1", 4250, "EUR")

    message = Message.write("m-1", note, Letter("Subject", "Body\n"), NOW)

    assert (message.user_id, message.kind, message.topic) == ("u-1", note.kind, "order:o-1")
    delivery = message.delivery

    assert delivery.status is Status.PENDING
    assert delivery.attempts == 0
    assert delivery.next_attempt_at == NOW
    assert delivery.lease_until is None


def test_a_failed_send_is_tried_again_after_a_pause_that_doubles_up_to_a_limit() -> None:
    pauses = []
    for attempts in range(1, 16):
        leased = Delivery(Status.PENDING, attempts, NOW, NOW + timedelta(seconds=15), "token")
        failed = leased.failed("421 try later", NOW)
        assert failed.lease_until is None
        assert failed.lease_token is None
        assert failed.status is Status.PENDING
        pauses.append((failed.next_attempt_at - NOW).total_seconds())

    assert pauses[:4] == [1, 2, 4, 8]
    assert pauses == sorted(pauses)
    assert pauses[-1] == RETRY_LONGEST.total_seconds()


def test_a_sent_message_keeps_when_it_was_sent_and_holds_no_lease() -> None:
    leased = Delivery(Status.PENDING, 1, NOW, NOW + timedelta(seconds=15), "token", "earlier")

    sent = leased.sent(NOW + timedelta(seconds=1))

    assert sent.status is Status.SENT
    assert sent.sent_at == NOW + timedelta(seconds=1)
    assert (sent.lease_until, sent.lease_token) == (None, None)


def test_a_refusal_for_good_ends_the_delivery_with_the_servers_words() -> None:
    leased = Delivery(Status.PENDING, 1, NOW, NOW + timedelta(seconds=15), "token")

    refused = leased.refused("550 no such mailbox" + "!" * 1000)

    assert refused.status is Status.FAILED
    assert refused.last_error is not None
    assert refused.last_error.startswith("550 no such mailbox")
    assert len(refused.last_error) == domain.ERROR_MAX


@pytest.mark.parametrize(
    ("sender", "expected"),
    [
        ("Agora <shop@example.com>", "<m-1@example.com>"),
        ("shop@example.com", "<m-1@example.com>"),
        ("no address", "<m-1@localhost>"),
        ("shop@", "<m-1@localhost>"),
    ],
)
def test_the_message_id_of_a_mail_comes_from_the_message(sender: str, expected: str) -> None:
    assert mail_id("m-1", sender) == expected


def test_a_cursor_comes_back_as_it_was_handed_out() -> None:
    cursor = Cursor(NOW, "2f1d2c7e-0b1a-4d43-9c55-9a1f7f0e2d11")

    assert CURSORS.decode(CURSORS.encode(cursor)) == cursor


@pytest.mark.parametrize(
    "token", ["", "!!", "bm90IGpzb24", "WzEsMl0", "W10", "WyIyMDI2LTAxLTAxVDAwOjAwOjAwIiwiaWQiXQ"]
)
def test_a_cursor_not_handed_out_is_refused(token: str) -> None:
    with pytest.raises(InvalidCursor):
        CURSORS.decode(token)


def test_a_page_holds_one_to_a_hundred_messages() -> None:
    def page_size(limit: int) -> int:
        return paging.page_size(limit, PAGE_MAX)

    assert page_size(1) == 1
    assert page_size(50) == 50
    assert page_size(500) == 100
    with pytest.raises(ValueError, match="at least one"):
        page_size(0)
