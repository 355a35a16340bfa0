"""Notifications' use cases: a message for each event, the sender that mails them, the mailbox
reads.

An event's handler only stores the message (rendered from its templates) in the transaction that
records the event in the inbox; the unique topic per user keeps it to one message whatever is
delivered twice. Mail goes out later, from the :class:`Sender`: it takes due messages with a
conditional update on a lease (so two replicas never send the same one at once), hands each to
the mail server outside any transaction and under a timeout, then writes the outcome. A sender
that dies mid-send loses its lease, and the message is sent again: at least once, always with
the same Message-ID.

Handlers are plain functions ``handler(session, store, ...)``: ``store`` turns the unit of work's
session into the :class:`Mailbox` port, so this module names no table.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog
from sqlalchemy.orm import Session

from agora.cursor import CursorCodec
from agora.db import UnitOfWork, on_commit
from agora.tasks import Bell
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


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Message]
    next_cursor: str | None


class Mailbox(Protocol):
    """What the handlers need from storage, within the current transaction."""

    def add(self, message: Message) -> bool:
        """Store ``message``; False (and nothing stored) when its user has a message on its
        topic already, also one another transaction is adding at this moment."""

    def on_topic(self, user_id: str, topic: str) -> Message | None: ...

    def remember(self, user_id: str, email: str, now: datetime) -> None:
        """Keep the user's address (the latest one given)."""

    def address(self, user_id: str) -> str | None: ...

    def get(self, message_id: str, *, for_update: bool = False) -> Message | None: ...

    def due(self, now: datetime, limit: int) -> list[str]:
        """Up to ``limit`` pending messages, oldest first, whose user's address is known, whose
        next attempt is due, and which no sender holds (or whose lease ran out)."""

    def claim(self, message_id: str, token: str, until: datetime, now: datetime) -> bool:
        """Lease the message to ``token`` until ``until`` and count an attempt, unless it is no
        longer due (another sender took it meanwhile)."""

    def save_delivery(self, message_id: str, delivery: Delivery) -> None: ...

    def page(self, query: MailboxQuery, limit: int) -> list[Message]:
        """Up to ``limit`` messages matching ``query``, newest first, after its cursor."""


Store = Callable[[Session], Mailbox]
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


# --- the events --------------------------------------------------------------------------------


def welcome_user(
    session: Session,
    store: Store,
    templates: Templates,
    user_id: str,
    email: str,
    wake: Wake = _nothing,
) -> bool:
    """Remember a new user's address, and welcome them. Messages that came before the address
    (an order's, its consumer being faster) can now be mailed too."""
    mailbox = store(session)
    mailbox.remember(check_user_id(user_id), check_email(email), _now())
    on_commit(session, wake)
    return notify(session, store, templates, domain.welcome(user_id, email), wake)


def notify(
    session: Session, store: Store, templates: Templates, note: Note, wake: Wake = _nothing
) -> bool:
    """Put the message ``note`` asks for in the user's mailbox, unless it has one on that topic;
    whether it was added."""
    mailbox = store(session)
    letter = templates.render(note.kind, note.facts)
    message = Message.write(str(uuid.uuid4()), note, letter, _now())
    if mailbox.add(message):
        on_commit(session, wake)
        return True
    earlier = mailbox.on_topic(note.user_id, note.topic)
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


def list_messages(session: Session, store: Store, query: MailboxQuery) -> Page:
    # One row more than the page shows whether another page follows.
    rows = store(session).page(query, query.limit + 1)
    items = rows[: query.limit]
    more = len(rows) > query.limit
    return Page(items, CURSORS.encode(Cursor.after(items[-1])) if more else None)


# --- the sender --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claim:
    """A message a sender has taken, with the mail to send; ``until`` is when its lease runs
    out."""

    token: str
    until: datetime
    mail: Mail


def claim_messages(
    session: Session, store: Store, now: datetime, lease: timedelta, limit: int
) -> list[Claim]:
    """Take up to ``limit`` due messages for ``lease``; those another sender took meanwhile are
    left to it."""
    mailbox = store(session)
    claims: list[Claim] = []
    for message_id in mailbox.due(now, limit):
        token = uuid.uuid4().hex
        if not mailbox.claim(message_id, token, now + lease, now):
            continue
        message = mailbox.get(message_id)
        assert message is not None
        address = mailbox.address(message.user_id)
        assert address is not None
        mail = Mail(message.id, address, message.subject, message.body, message.created_at)
        claims.append(Claim(token, now + lease, mail))
    return claims


def record_sent(session: Session, store: Store, claim: Claim, now: datetime) -> None:
    """The server accepted the mail: the message is sent, whoever holds its lease now (a
    sender that took it after this one's lease ran out sends it again; nothing stops that
    copy, but the message is no longer due)."""
    mailbox = store(session)
    message = mailbox.get(claim.mail.message_id, for_update=True)
    if message is None or message.delivery.status is not Status.PENDING:
        return
    mailbox.save_delivery(message.id, message.delivery.sent(now))


def record_failure(
    session: Session, store: Store, claim: Claim, error: str, now: datetime, *, final: bool
) -> bool:
    """The send failed: put the message back for later (``final``: for good). False when the
    lease was lost to another sender, whose own outcome counts."""
    mailbox = store(session)
    message = mailbox.get(claim.mail.message_id, for_update=True)
    if (
        message is None
        or message.delivery.status is not Status.PENDING
        or message.delivery.lease_token != claim.token
    ):
        return False
    delivery = message.delivery
    mailbox.save_delivery(
        message.id, delivery.refused(error) if final else delivery.failed(error, now)
    )
    return True


Clock = Callable[[], datetime]


class Sender:
    """Mails pending messages, outside any transaction, each send under ``timeout`` seconds.

    ``run`` is the service's background loop: a round takes up to ``batch`` due messages and
    sends them concurrently; it goes again at once when the round was full, when a commit rings
    the wakeup, or after ``poll`` seconds. ``run_once`` is one round, awaited to the end.
    """

    def __init__(
        self,
        uow: UnitOfWork,
        store: Store,
        mailer: Mailer,
        *,
        timeout: float,
        lease: timedelta,
        poll: float = 1.0,
        batch: int = 20,
        wakeup: Bell | None = None,
        clock: Clock | None = None,
    ) -> None:
        if lease.total_seconds() <= timeout:
            raise ValueError("a lease must outlast the send it covers")
        self.uow = uow
        self.store = store
        self.mailer = mailer
        self.timeout = timeout
        self.lease = lease
        self.poll = poll
        self.batch = batch
        self.wakeup = wakeup or Bell()
        self.clock = clock or _now

    async def run(self) -> None:
        self.wakeup.start()
        while True:
            if await self.run_once() < self.batch:
                await self.wakeup.wait(self.poll)

    async def run_once(self) -> int:
        """Take what is due, send each, record the outcomes; how many messages were taken."""
        claims = await self.uow.run(
            claim_messages, self.store, self.clock(), self.lease, self.batch
        )
        await asyncio.gather(*(self._deliver(claim) for claim in claims))
        return len(claims)

    async def _deliver(self, claim: Claim) -> None:
        mail = claim.mail
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    await self.mailer.send(mail)
            except MailRefused as refusal:
                log.warning("mail refused", message_id=mail.message_id, error=str(refusal))
                await self._failed(claim, str(refusal), final=True)
            except (MailError, TimeoutError) as error:
                reason = str(error) or "the mail server did not answer in time"
                log.info("mail not sent, will try again", message_id=mail.message_id, error=reason)
                await self._failed(claim, reason, final=False)
            else:
                await self.uow.run(record_sent, self.store, claim, self.clock())
                log.info("mail sent", message_id=mail.message_id)
        except Exception:
            # Nothing is recorded: the lease runs out and the message is sent again.
            log.exception("mail not completed", message_id=mail.message_id)

    async def _failed(self, claim: Claim, error: str, *, final: bool) -> None:
        await self.uow.run(record_failure, self.store, claim, error, self.clock(), final=final)


def _now() -> datetime:
    return datetime.now(UTC)
