"""A message as the mail server gets it: the same mail on every send."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy

from notifications.adapters import compose
from notifications.application import Mail

WHEN = datetime(2026, 11, 24, 12, 30, tzinfo=UTC)
MAIL = Mail(
    message_id="7a0c1f3e-2b4d-4e5f-8a9b-0c1d2e3f4a5b",
    to="zoe@example.org",
    subject="Your order order-7 is confirmed",
    body="Hello Zoë,\n\nOrder order-7 costs EUR 42.50.\n",
    created_at=WHEN,
)


def test_a_mail_says_who_it_is_from_and_to_and_what_it_is_about() -> None:
    mail = compose(MAIL, "Agora <shop@example.com>")

    assert mail["From"] == "Agora <shop@example.com>"
    assert mail["To"] == "zoe@example.org"
    assert mail["Subject"] == "Your order order-7 is confirmed"
    assert mail["Message-ID"] == "<7a0c1f3e-2b4d-4e5f-8a9b-0c1d2e3f4a5b@example.com>"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail.get_content_type() == "text/plain"
    assert mail.get_content() == MAIL.body


def test_every_send_of_a_message_is_the_same_mail() -> None:
    first = compose(MAIL, "Agora <shop@example.com>").as_bytes(policy=policy.SMTPUTF8)
    again = compose(MAIL, "Agora <shop@example.com>").as_bytes(policy=policy.SMTPUTF8)

    assert first == again
    parsed = message_from_bytes(first, policy=policy.default)
    assert parsed["Date"].datetime == WHEN
