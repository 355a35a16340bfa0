"""Notifications' use cases: a message for each event, the sender that mails them, the mailbox
reads.

An event's handler only stores the message (rendered from its templates) in the transaction that
records the event in the inbox; the unique topic per user keeps it to one message whatever is
delivered twice. Mail goes out later, from the chassis's worker (:class:`agora.tasks.Worker`)
running :class:`Mailing`: it claims due messages with a conditional update on a lease (so two
replicas never send the same one at once), hands each to the mail server outside any transaction
and under a timeout, then writes the outcome. A sender that dies mid-send loses its lease, and the
message is sent again: at least once, always with the same Message-ID.

Transactions are plain functions ``handler(connection, messages, ...)`` that the unit of work runs:
``messages`` keeps the messages and the users' addresses within that transaction (the SQL one in
production), so this module names no table.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog
from sqlalchemy import Connection

from agora import tasks
from agora.cursor import CursorCodec, Page, paged
from agora.db import UnitOfWork, on_commit
from notifications import domain
from notifications.domain import (
    Cursor,
    Delivery,
    Kind,
    Letter,
    Message,
    Note,
    Status,
    check_email,
    check_user_id,
)

log = structlog.get_logger("notifications")


# --- ports -------------------------------------------------------------------------------------


class Templates(Protocol):
    """The texts of the messages."""

    def render(self, kind: Kind, facts: Mapping[str, str]) -> Letter:
        """The subject and body of a message of ``kind`` showing ``facts``."""


@dataclass(frozen=True, slots=True)
class MailboxQuery:
    """A page of messages, newest first: one user's, or everyone's (``user_id`` None)."""

    limit: int
    user_id: str | None = None
    after: Cursor | None = None


class Messages(Protocol):
    """The users' messages (their mailboxes) and the addresses to mail them to, within the
    transaction of ``connection``."""

    def add(self, connection: Connection, message: Message) -> bool:
        """Store ``message``; False (and nothing stored) when its user has a message on its
        topic already, also one another transaction is adding at this moment."""

    def on_topic(self, connection: Connection, user_id: str, topic: str) -> Message | None: ...

    def remember(self, connection: Connection, user_id: str, email: str, now: datetime) -> None:
        """Keep the user's address (the latest one given)."""

    def address(self, connection: Connection, user_id: str) -> str | None: ...

    def get(
        self, connection: Connection, message_id: str, *, for_update: bool = False
    ) -> Message | None: ...

    def due(self, connection: Connection, now: datetime, limit: int) -> list[str]:
        """Up to ``limit`` pending messages, oldest first, whose user's address is known, whose
        next attempt is due, and which no sender holds (or whose lease ran out)."""

    def claim(
        self, connection: Connection, message_id: str, token: str, until: datetime, now: datetime
    ) -> bool:
        """Lease the message to ``token`` until ``until`` and count an attempt, unless it is no
        longer due (another sender took it meanwhile)."""

    def save_delivery(
        self, connection: Connection, message_id: str, delivery: Delivery
    ) -> None: ...

    def page(self, connection: Connection, query: MailboxQuery, limit: int) -> list[Message]:
        """Up to ``limit`` messages matching ``query``, newest first, after its cursor."""


CURSORS = CursorCodec(Cursor)


@dataclass(frozen=True, slots=True)
class Mail:
    """A message as it goes to the mail server."""

    message_id: str
    to: str
    subject: str
    body: str
    created_at: datetime


class MailError(Exception):
    """The mail server could not take the mail now (down, busy, slow): try again later."""


class MailRefused(Exception):
    """The mail server refused the mail for good (an unknown recipient, say)."""


class Mailer(Protocol):
    """The mail server."""

    async def send(self, mail: Mail) -> None:
        """Hand ``mail`` over; returns once the server accepted it. Raises
        :class:`MailRefused` or :class:`MailError`."""


Wake = Callable[[], None]


def _nothing() -> None:
    """The wake of a unit of work with no sender to wake."""


@dataclass(frozen=True, slots=True)
class Parts:
    """What bootstrap chooses for the routes, the subscriptions and the sender: the storage, the
    texts, what a commit that leaves mail to send wakes (the sender's bell), and the mail server
    (None when none is configured: the messages then wait in the mailboxes)."""

    messages: Messages
    templates: Templates
    wakeup: Wake = _nothing
    mailer: Mailer | None = None


# --- the events --------------------------------------------------------------------------------


def welcome_user(
    connection: Connection,
    messages: Messages,
    templates: Templates,
    user_id: str,
    email: str,
    wake: Wake = _nothing,
) -> bool:
    """Remember a new user's address, and welcome them. Messages that came before the address
    (an order's, its consumer being faster) can now be mailed too."""
    messages.remember(connection, check_user_id(user_id), check_email(email), _now())
    on_commit(connection, wake)
    return notify(connection, messages, templates, domain.welcome(user_id, email), wake)


def notify(
    connection: Connection,
    messages: Messages,
    templates: Templates,
    note: Note,
    wake: Wake = _nothing,
) -> bool:
    """Put the message ``note`` asks for in the user's mailbox, unless it has one on that topic;
    whether it was added."""
    letter = templates.render(note.kind, note.facts)
    message = Message.write(str(uuid.uuid4()), note, letter, _now())
    if messages.add(connection, message):
        on_commit(connection, wake)
        return True
    earlier = messages.on_topic(connection, note.user_id, note.topic)
    if earlier is not None and earlier.kind is not note.kind:
        # An order ends once: a second ending is a publisher's mistake, and the user keeps
        # the message they were sent.
        log.warning(
            "a second message on one topic not made",
            user_id=note.user_id,
            topic=note.topic,
            kept=earlier.kind.value,
            dropped=note.kind.value,
        )
    return False


# --- the read side -----------------------------------------------------------------------------


def list_messages(connection: Connection, messages: Messages, query: MailboxQuery) -> Page[Message]:
    # One row more than the page shows whether another page follows.
    rows = messages.page(connection, query, query.limit + 1)
    return paged(CURSORS, rows, query.limit, Cursor.after)


# --- the sender's steps ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claim:
    """A message a sender has taken, with the mail to send; ``until`` is when its lease runs
    out."""

    token: str
    until: datetime
    mail: Mail


@dataclass(frozen=True, slots=True)
class Sent:
    """The mail server took the mail."""


@dataclass(frozen=True, slots=True)
class NotSent:
    """The send failed: ``final`` when the server refused the mail for good."""

    error: str
    final: bool


Sending = Sent | NotSent


def claim_messages(
    connection: Connection, messages: Messages, now: datetime, lease: timedelta, limit: int
) -> list[Claim]:
    """Take up to ``limit`` due messages for ``lease``; those another sender took meanwhile are
    left to it."""
    claims: list[Claim] = []
    for message_id, token in tasks.leased(connection, messages, now, now + lease, limit):
        message = messages.get(connection, message_id)
        assert message is not None
        address = messages.address(connection, message.user_id)
        assert address is not None
        mail = Mail(message.id, address, message.subject, message.body, message.created_at)
        claims.append(Claim(token, now + lease, mail))
    return claims


def record_sent(connection: Connection, messages: Messages, claim: Claim, now: datetime) -> None:
    """The server accepted the mail: the message is sent, whoever holds its lease now (a
    sender that took it after this one's lease ran out sends it again; nothing stops that
    copy, but the message is no longer due)."""
    message = messages.get(connection, claim.mail.message_id, for_update=True)
    if message is None or message.delivery.status is not Status.PENDING:
        return
    messages.save_delivery(connection, message.id, message.delivery.sent(now))


def record_failure(
    connection: Connection,
    messages: Messages,
    claim: Claim,
    error: str,
    now: datetime,
    *,
    final: bool,
) -> bool:
    """The send failed: put the message back for later (``final``: for good). False when the
    lease was lost to another sender, whose own outcome counts."""
    message = messages.get(connection, claim.mail.message_id, for_update=True)
    if (
        message is None
        or message.delivery.status is not Status.PENDING
        or message.delivery.lease_token != claim.token
    ):
        return False
    delivery = message.delivery
    messages.save_delivery(
        connection, message.id, delivery.refused(error) if final else delivery.failed(error, now)
    )
    return True


class Mailing:
    """The sender's three steps (:class:`agora.tasks.Steps`): claim due messages, hand each to
    the mail server under ``timeout`` seconds, record how that went."""

    def __init__(self, uow: UnitOfWork, messages: Messages, mailer: Mailer, timeout: float) -> None:
        self.uow = uow
        self.messages = messages
        self.mailer = mailer
        self.timeout = timeout

    async def claim(self, now: datetime, lease: timedelta, limit: int) -> list[Claim]:
        return await self.uow.run(claim_messages, self.messages, now, lease, limit)

    async def call(self, claim: Claim) -> Sending:
        mail = claim.mail
        try:
            async with asyncio.timeout(self.timeout):
                await self.mailer.send(mail)
        except MailRefused as refusal:
            log.warning("mail refused", message_id=mail.message_id, error=str(refusal))
            return NotSent(str(refusal), final=True)
        except (MailError, TimeoutError) as error:
            reason = str(error) or "the mail server did not answer in time"
            log.info("mail not sent, will try again", message_id=mail.message_id, error=reason)
            return NotSent(reason, final=False)
        return Sent()

    def record(self, connection: Connection, claim: Claim, outcome: Sending, now: datetime) -> None:
        if isinstance(outcome, NotSent):
            record_failure(
                connection, self.messages, claim, outcome.error, now, final=outcome.final
            )
            return
        record_sent(connection, self.messages, claim, now)
        message_id = claim.mail.message_id
        on_commit(connection, lambda: log.info("mail sent", message_id=message_id))

    def describe(self, claim: Claim) -> dict[str, object]:
        return {"message_id": claim.mail.message_id}


class Sender(tasks.Worker[Claim, Sending]):
    """The chassis's worker over :class:`Mailing`; :func:`sender` makes one."""

    steps: Mailing


def sender(
    uow: UnitOfWork,
    messages: Messages,
    mailer: Mailer,
    *,
    timeout: float,
    lease: timedelta,
    poll: float = 1.0,
    batch: int = 20,
    wakeup: tasks.Bell | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Sender:
    """The sender that mails pending messages, each send under ``timeout`` seconds: a round
    claims up to ``batch``; the loop claims again when the bell rings or after ``poll``
    seconds."""
    if lease.total_seconds() <= timeout:
        raise ValueError("a lease must outlast the send it covers")
    steps = Mailing(uow, messages, mailer, timeout)
    return Sender(steps, lease=lease, poll=poll, batch=batch, wakeup=wakeup, clock=clock)


def _now() -> datetime:
    return datetime.now(UTC)
