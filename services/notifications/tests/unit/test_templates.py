"""The texts of the messages, rendered from the templates shipped with the service."""

from __future__ import annotations

from importlib import resources

import pytest
from jinja2 import UndefinedError

from notifications import domain
from notifications.adapters import JinjaTemplates
from notifications.domain import Kind

TEMPLATES = JinjaTemplates()


@pytest.mark.parametrize("kind", list(Kind))
def test_every_kind_of_message_has_a_subject_and_a_body(kind: Kind) -> None:
    folder = resources.files("notifications").joinpath("templates")

    assert folder.joinpath(f"{kind.value}.subject.txt").is_file()
    assert folder.joinpath(f"{kind.value}.body.txt").is_file()


def test_a_welcome_names_the_address_the_user_registered_with() -> None:
    note = domain.welcome("u-1", "ada@example.org")

    letter = TEMPLATES.render(note.kind, note.facts)

    assert letter.subject == "Welcome to Agora"
    assert letter.body.startswith("Hello,\n\nWelcome to Agora! Your account for ada@example.org")
    assert letter.body.endswith("The Agora team\n")


def test_a_confirmation_shows_the_order_and_its_total_in_major_units() -> None:
    note = domain.order_confirmed("order-7", "u-1", 123456, "EUR")

    letter = TEMPLATES.render(note.kind, note.facts)

    assert letter.subject == "Your order order-7 is confirmed"
    assert "Order order-7 is confirmed: your payment\nof EUR 1,234.56 went through" in letter.body


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        ("out_of_stock", "because some of the items are out of stock."),
        ("payment_declined", "because your card was declined."),
        ("payment_failed", "because the payment could not be processed."),
        ("customer_cancelled", "because you asked us to cancel it."),
        ("stock_timeout", "because we could not confirm that the items are in stock in time."),
        ("payment_timeout", "because the payment was not confirmed in time."),
        (
            "reservation_expired",
            "because the items were no longer available when your payment came through.",
        ),
        ("fraud_suspected", "because of an issue with the order (fraud suspected)."),
        ("fraud\n", "because of an issue with the order."),
        ("???", "because of an issue with the order."),
    ],
)
def test_a_cancellation_gives_its_reason_in_plain_words(reason: str, words: str) -> None:
    note = domain.order_cancelled("order-7", "u-1", reason)

    letter = TEMPLATES.render(note.kind, note.facts)

    assert letter.subject == "Your order order-7 was cancelled"
    assert f"We are sorry: order order-7 was cancelled {words}\n" in letter.body


def test_a_dispatched_shipment_says_the_order_is_on_its_way_and_how_to_follow_it() -> None:
    note = domain.shipment_dispatched(
        "ship-3", "order-7", "u-1", "royal-mail", "tracked-48", "RM0123456789ABCDEF"
    )

    letter = TEMPLATES.render(note.kind, note.facts)

    assert letter.subject == "Your order order-7 is on its way"
    assert letter.body.startswith("Hello,\n\nGood news: order order-7 is on its way.")
    assert "The carrier royal-mail\ncollected it" in letter.body
    assert "by its tracked-48 service." in letter.body
    assert "tracking number RM0123456789ABCDEF\n" in letter.body
    assert letter.body.endswith("The Agora team\n")


@pytest.mark.parametrize("kind", list(Kind))
def test_no_placeholder_is_left_in_a_message(kind: Kind) -> None:
    facts = {
        "email": "ada@example.org",
        "order_id": "order-7",
        "total": "EUR 1.00",
        "reason": "x",
        "carrier": "dhl",
        "service_level": "standard",
        "tracking_number": "DH1",
    }

    letter = TEMPLATES.render(kind, facts)

    assert "{" not in letter.subject + letter.body
    assert "\n" not in letter.subject


@pytest.mark.parametrize(
    "kind", [Kind.ORDER_CONFIRMED, Kind.ORDER_CANCELLED, Kind.SHIPMENT_DISPATCHED]
)
def test_a_fact_missing_from_a_message_is_an_error_not_a_gap(kind: Kind) -> None:
    with pytest.raises(UndefinedError):
        TEMPLATES.render(kind, {"order_id": "order-7"})


def test_text_is_not_escaped_as_html() -> None:
    note = domain.welcome("u-1", "o'brien&sons@example.org")

    letter = TEMPLATES.render(note.kind, note.facts)

    assert "o'brien&sons@example.org" in letter.body
