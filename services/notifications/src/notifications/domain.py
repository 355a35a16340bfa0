"""Notifications' rules: which message an event makes, how money and reasons read to a customer,
and the delivery of a message by mail.

Plain Python: no framework, no I/O. An event becomes a :class:`Note` (who is told what, with the
facts the templates show); the templates turn a note into a :class:`Letter` (subject and body);
a :class:`Message` is the letter in the user's mailbox, with its :class:`Delivery`.

One message per topic per user: ``welcome`` for a new account, ``order:<id>`` for an order,
``shipment:<id>`` for a shipment on its way. An order ends once (confirmed or cancelled), so a
second event about the same order, whatever its kind, makes no second message; a shipment is
dispatched once, so a second event about the same shipment makes none either. A shipment's topic
is its own, not its order's: the message that the order is confirmed and the one that it is on its
way are two messages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

USER_ID_MAX = 100
ORDER_ID_MAX = 100
SHIPMENT_ID_MAX = 100
# Carriers, service levels and tracking numbers are shipping's short codes (``dhl``,
# ``standard``, ``DH0123...``), shown in a message as given.
SHIPPING_CODE_MAX = 100
EMAIL_MAX = 320
ERROR_MAX = 500
PAGE_DEFAULT = 50
PAGE_MAX = 100
# A send that failed for a passing reason (the server down, busy, slow) is tried again after a
# pause that doubles up to this.
RETRY_FIRST = timedelta(seconds=1)
RETRY_LONGEST = timedelta(minutes=5)

WELCOME_TOPIC = "welcome"
ORDER_TOPIC = "order:"
SHIPMENT_TOPIC = "shipment:"
# The longest topic is a shipment's: "shipment:" and a shipment id.
TOPIC_MAX = 110
# Message ids are UUIDs (as text).
_MESSAGE_ID = re.compile(r"[0-9a-f-]{1,36}")


class InvalidEvent(Exception):
    """Invalid event."""


class Kind(StrEnum):
    WELCOME = "welcome"
    ORDER_CONFIRMED = "order_confirmed"
    ORDER_CANCELLED = "order_cancelled"
    SHIPMENT_DISPATCHED = "shipment_dispatched"


# Ids and addresses are printable: no id has a control character, an address with a line break
# would end a mail header and start another, and PostgreSQL cannot store NUL at all.


def check_user_id(user_id: str) -> str:
    if not 0 < len(user_id) <= USER_ID_MAX or not user_id.isprintable():
        raise InvalidEvent(f"a user id is 1 to {USER_ID_MAX} printable characters")
    return user_id


def check_order_id(order_id: str) -> str:
    if not 0 < len(order_id) <= ORDER_ID_MAX or not order_id.isprintable():
        raise InvalidEvent(f"an order id is 1 to {ORDER_ID_MAX} printable characters")
    return order_id


def check_shipment_id(shipment_id: str) -> str:
    if not 0 < len(shipment_id) <= SHIPMENT_ID_MAX or not shipment_id.isprintable():
        raise InvalidEvent(f"a shipment id is 1 to {SHIPMENT_ID_MAX} printable characters")
    return shipment_id


def check_shipping_code(name: str, value: str) -> str:
    """A carrier, service level or tracking number: shown in a message, so one printable line."""
    if not 0 < len(value) <= SHIPPING_CODE_MAX or not value.isprintable() or not value.strip():
        raise InvalidEvent(f"a {name} is 1 to {SHIPPING_CODE_MAX} printable characters")
    return value


def check_email(email: str) -> str:
    """An address a mail can go to: a local part and a domain."""
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain or len(email) > EMAIL_MAX or not email.isprintable():
        raise InvalidEvent("an email address is local@domain, printable, at most 320 characters")
    return email


# --- money and reasons, as a customer reads them ----------------------------------------------

# Digits after the decimal point, by ISO 4217 code; every other currency has two.
_MINOR_DIGITS = {
    **dict.fromkeys(
        ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND"),
        0,
    ),
    **dict.fromkeys(("VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}


def money(amount: int, currency: str) -> str:
    """``amount`` minor units of ``currency`` in major units: ``money(4250, "EUR")`` is
    ``EUR 42.50``, ``money(1500, "JPY")`` is ``JPY 1,500``."""
    digits = _MINOR_DIGITS.get(currency, 2)
    sign = "-" if amount < 0 else ""
    major, minor = divmod(abs(amount), 10**digits)
    fraction = f".{minor:0{digits}d}" if digits else ""
    return f"{currency} {sign}{major:,}{fraction}"


# Why an order was cancelled (contracts.orders.OrderCancelled.reason), in plain words that
# complete "Your order was cancelled because ...".
REASONS: dict[str, str] = {
    "out_of_stock": "some of the items are out of stock",
    "payment_declined": "your card was declined",
    "payment_failed": "the payment could not be processed",
    "customer_cancelled": "you asked us to cancel it",
    "stock_timeout": "we could not confirm that the items are in stock in time",
    "payment_timeout": "the payment was not confirmed in time",
    "reservation_expired": "the items were no longer available when your payment came through",
}
GENERAL_REASON = "of an issue with the order"
_CODE = re.compile(r"[a-z][a-z0-9_]{0,40}")


def reason_in_words(reason: str) -> str:
    """The plain words for a cancellation reason. A reason orders added after this service was
    written still reads as a sentence: its code spelled out when it is one
    (``fraud_suspected``: "of an issue with the order (fraud suspected)")."""
    if reason in REASONS:
        return REASONS[reason]
    if _CODE.fullmatch(reason):
        return f"{GENERAL_REASON} ({reason.replace('_', ' ')})"
    return GENERAL_REASON


# --- notes, letters and messages --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Note:
    """What an event asks to tell a user: the kind of message, and the facts it shows."""

    kind: Kind
    user_id: str
    order_id: str | None
    facts: Mapping[str, str]
    shipment_id: str | None = None

    @property
    def topic(self) -> str:
        """What the message is about: one message per topic per user. A shipment's message is
        about the shipment, though it names its order too."""
        if self.shipment_id is not None:
            return f"{SHIPMENT_TOPIC}{self.shipment_id}"
        if self.order_id is not None:
            return f"{ORDER_TOPIC}{self.order_id}"
        return WELCOME_TOPIC


def welcome(user_id: str, email: str) -> Note:
    return Note(Kind.WELCOME, check_user_id(user_id), None, {"email": check_email(email)})


def order_confirmed(order_id: str, user_id: str, total: int, currency: str) -> Note:
    facts = {"order_id": check_order_id(order_id), "total": money(total, currency)}
    return Note(Kind.ORDER_CONFIRMED, check_user_id(user_id), order_id, facts)


def order_cancelled(order_id: str, user_id: str, reason: str) -> Note:
    facts = {"order_id": check_order_id(order_id), "reason": reason_in_words(reason)}
    return Note(Kind.ORDER_CANCELLED, check_user_id(user_id), order_id, facts)


def shipment_dispatched(
    shipment_id: str,
    order_id: str,
    user_id: str,
    carrier: str,
    service_level: str,
    tracking_number: str,
) -> Note:
    facts = {
        "order_id": check_order_id(order_id),
        "carrier": check_shipping_code("carrier", carrier),
        "service_level": check_shipping_code("service level", service_level),
        "tracking_number": check_shipping_code("tracking number", tracking_number),
    }
    return Note(
        Kind.SHIPMENT_DISPATCHED,
        check_user_id(user_id),
        order_id,
        facts,
        shipment_id=check_shipment_id(shipment_id),
    )


@dataclass(frozen=True, slots=True)
class Letter:
    """A rendered message: a subject on one line, a plain-text body."""

    subject: str
    body: str

    @classmethod
    def of(cls, subject: str, body: str) -> Letter:
        """Tidy what the templates gave: a subject is one line (a line break in it would start a
        new mail header), a body ends with one line break."""
        return cls(" ".join(subject.split()), body.strip("\n") + "\n")


class Status(StrEnum):
    """Where a message's mail is. ``pending``: to be sent (once the address is known and mail is
    configured); ``sent``: the mail server accepted it; ``failed``: the server refused it for
    good (an unknown recipient, say), so it is not tried again."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message's mail: its state, the sends started so far, when the next may start, and the
    lease of the sender that holds it (``lease_until``, ``lease_token``)."""

    status: Status
    attempts: int
    next_attempt_at: datetime
    lease_until: datetime | None = None
    lease_token: str | None = None
    last_error: str | None = None
    sent_at: datetime | None = None

    @classmethod
    def pending(cls, now: datetime) -> Delivery:
        return cls(Status.PENDING, attempts=0, next_attempt_at=now)

    def sent(self, now: datetime) -> Delivery:
        """The mail server accepted the mail."""
        return replace(self, status=Status.SENT, sent_at=now, lease_until=None, lease_token=None)

    def failed(self, error: str, now: datetime) -> Delivery:
        """The send failed for a passing reason: try again after a pause that grows with each
        attempt."""
        pause = min(RETRY_FIRST * 2 ** max(self.attempts - 1, 0), RETRY_LONGEST)
        return replace(
            self,
            next_attempt_at=now + pause,
            last_error=error[:ERROR_MAX],
            lease_until=None,
            lease_token=None,
        )

    def refused(self, error: str) -> Delivery:
        """The mail server refused the mail for good."""
        return replace(
            self,
            status=Status.FAILED,
            last_error=error[:ERROR_MAX],
            lease_until=None,
            lease_token=None,
        )


@dataclass(frozen=True, slots=True)
class Message:
    """A message in a user's mailbox."""

    id: str
    user_id: str
    kind: Kind
    topic: str
    order_id: str | None
    subject: str
    body: str
    created_at: datetime
    delivery: Delivery
    shipment_id: str | None = None

    @classmethod
    def write(cls, id: str, note: Note, letter: Letter, now: datetime) -> Message:
        return cls(
            id=id,
            user_id=note.user_id,
            kind=note.kind,
            topic=note.topic,
            order_id=note.order_id,
            subject=letter.subject,
            body=letter.body,
            created_at=now,
            delivery=Delivery.pending(now),
            shipment_id=note.shipment_id,
        )


def mail_id(message_id: str, sender: str) -> str:
    """The Message-ID header of a message's mail: the same on every send, so a mail sent twice
    (a sender that died after the server accepted it) is recognisably one message."""
    _, at, domain = sender.rpartition("@")
    domain = domain.strip(" >")
    return f"<{message_id}@{domain if at and domain else 'localhost'}>"


# --- paging ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page of a mailbox starts: after this message (newest first; ties by id).
    Keyset paging, so pages neither repeat nor skip messages while new ones come in. The
    application hands it out as an opaque token (agora.cursor)."""

    created_at: datetime
    id: str

    def __post_init__(self) -> None:
        if not _MESSAGE_ID.fullmatch(self.id):
            raise ValueError("no message has this id")

    @classmethod
    def after(cls, message: Message) -> Cursor:
        return cls(message.created_at, message.id)
