"""Storage of messages and addresses in SQL (SQLite or PostgreSQL), the texts of the messages
(Jinja2 templates shipped in the package), and the mail server (SMTP)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import aiosmtplib
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from sqlalchemy import (
    CheckConstraint,
    Column,
    Connection,
    Index,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
    tuple_,
)

from agora.columns import key_text, timestamp
from agora.db import aware
from agora.sql import dialect_insert, insert_if_absent, rowcount, take_lease
from notifications.application import Mail, MailboxQuery, MailError, MailRefused
from notifications.domain import (
    EMAIL_MAX,
    ERROR_MAX,
    ORDER_ID_MAX,
    SHIPMENT_ID_MAX,
    TOPIC_MAX,
    USER_ID_MAX,
    Delivery,
    Kind,
    Letter,
    Message,
    Status,
    mail_id,
)

metadata = MetaData()


addresses = Table(
    "addresses",
    metadata,
    Column("user_id", String(USER_ID_MAX), primary_key=True),
    Column("email", String(EMAIL_MAX), nullable=False),
    timestamp("updated_at"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", key_text(36), primary_key=True),
    Column("user_id", String(USER_ID_MAX), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("topic", String(TOPIC_MAX), nullable=False),
    Column("order_id", String(ORDER_ID_MAX), nullable=True),
    Column("shipment_id", String(SHIPMENT_ID_MAX), nullable=True),
    Column("subject", Text, nullable=False),
    Column("body", Text, nullable=False),
    timestamp("created_at"),
    Column("status", String(10), nullable=False),
    Column("attempts", Integer, nullable=False),
    timestamp("next_attempt_at"),
    timestamp("lease_until", nullable=True),
    Column("lease_token", String(32), nullable=True),
    Column("last_error", String(ERROR_MAX), nullable=True),
    timestamp("sent_at", nullable=True),
    # One message per topic per user, whatever delivers its event twice or sends a second
    # event about the same order or shipment: the database refuses the second.
    UniqueConstraint("user_id", "topic", name="uq_messages_user_topic"),
    CheckConstraint("status IN ('pending', 'sent', 'failed')", name="ck_messages_status"),
    CheckConstraint("attempts >= 0", name="ck_messages_attempts"),
    Index("ix_messages_user_created", "user_id", "created_at", "id"),
    Index("ix_messages_created", "created_at", "id"),
    Index("ix_messages_due", "status", "next_attempt_at"),
)

COLUMNS = (
    messages.c.id,
    messages.c.user_id,
    messages.c.kind,
    messages.c.topic,
    messages.c.order_id,
    messages.c.shipment_id,
    messages.c.subject,
    messages.c.body,
    messages.c.created_at,
    messages.c.status,
    messages.c.attempts,
    messages.c.next_attempt_at,
    messages.c.lease_until,
    messages.c.lease_token,
    messages.c.last_error,
    messages.c.sent_at,
)


def _moment(moment: datetime | None) -> datetime:
    found = aware(moment)
    assert found is not None
    return found


def _message(row: Row[*tuple[Any, ...]]) -> Message:
    return Message(
        id=row.id,
        user_id=row.user_id,
        kind=Kind(row.kind),
        topic=row.topic,
        order_id=row.order_id,
        shipment_id=row.shipment_id,
        subject=row.subject,
        body=row.body,
        created_at=_moment(row.created_at),
        delivery=Delivery(
            status=Status(row.status),
            attempts=row.attempts,
            next_attempt_at=_moment(row.next_attempt_at),
            lease_until=aware(row.lease_until),
            lease_token=row.lease_token,
            last_error=row.last_error,
            sent_at=aware(row.sent_at),
        ),
    )


def _delivery_values(delivery: Delivery) -> dict[str, Any]:
    return {
        "status": delivery.status.value,
        "attempts": delivery.attempts,
        "next_attempt_at": delivery.next_attempt_at,
        "lease_until": delivery.lease_until,
        "lease_token": delivery.lease_token,
        "last_error": delivery.last_error,
        "sent_at": delivery.sent_at,
    }


def _due(now: datetime) -> Any:
    return (
        (messages.c.status == Status.PENDING.value)
        & (messages.c.next_attempt_at <= now)
        & (messages.c.lease_until.is_(None) | (messages.c.lease_until <= now))
    )


class SqlMessages:
    """The :class:`notifications.application.Messages` port in SQL, within the caller's
    transaction."""

    def add(self, connection: Connection, message: Message) -> bool:
        values = {
            "id": message.id,
            "user_id": message.user_id,
            "kind": message.kind.value,
            "topic": message.topic,
            "order_id": message.order_id,
            "shipment_id": message.shipment_id,
            "subject": message.subject,
            "body": message.body,
            "created_at": message.created_at,
            **_delivery_values(message.delivery),
        }
        # On a topic the user has a message on, nothing: on PostgreSQL a transaction adding the
        # same topic at this moment waits for the other's commit, then adds nothing.
        statement = insert_if_absent(connection, messages).values(values)
        return rowcount(connection.execute(statement)) == 1

    def on_topic(self, connection: Connection, user_id: str, topic: str) -> Message | None:
        row = connection.execute(
            select(*COLUMNS).where(messages.c.user_id == user_id, messages.c.topic == topic)
        ).first()
        return None if row is None else _message(row)

    def remember(self, connection: Connection, user_id: str, email: str, now: datetime) -> None:
        statement = dialect_insert(connection, addresses).values(
            user_id=user_id, email=email, updated_at=now
        )
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=[addresses.c.user_id],
                set_={"email": email, "updated_at": now},
            )
        )

    def address(self, connection: Connection, user_id: str) -> str | None:
        found = connection.execute(
            select(addresses.c.email).where(addresses.c.user_id == user_id)
        ).scalar()
        return None if found is None else str(found)

    def get(
        self, connection: Connection, message_id: str, *, for_update: bool = False
    ) -> Message | None:
        statement = select(*COLUMNS).where(messages.c.id == message_id)
        if for_update:
            statement = statement.with_for_update()
        row = connection.execute(statement).first()
        return None if row is None else _message(row)

    def due(self, connection: Connection, now: datetime, limit: int) -> list[str]:
        statement = (
            select(messages.c.id)
            .join(addresses, addresses.c.user_id == messages.c.user_id)
            .where(_due(now))
            .order_by(messages.c.next_attempt_at, messages.c.id)
            .limit(limit)
            # Two replicas looking at once take different messages (the claim's conditional
            # update is what keeps them from sending the same one).
            .with_for_update(of=messages, skip_locked=True)
        )
        return list(connection.execute(statement).scalars())

    def claim(
        self, connection: Connection, message_id: str, token: str, until: datetime, now: datetime
    ) -> bool:
        where = (messages.c.id == message_id, _due(now))
        return take_lease(
            connection, messages, *where, token=token, until=until, attempts=messages.c.attempts + 1
        )

    def save_delivery(self, connection: Connection, message_id: str, delivery: Delivery) -> None:
        connection.execute(
            messages.update()
            .where(messages.c.id == message_id)
            .values(**_delivery_values(delivery))
        )

    def page(self, connection: Connection, query: MailboxQuery, limit: int) -> list[Message]:
        statement = select(*COLUMNS)
        if query.user_id is not None:
            statement = statement.where(messages.c.user_id == query.user_id)
        if query.after is not None:
            statement = statement.where(
                tuple_(messages.c.created_at, messages.c.id)
                < tuple_(query.after.created_at, query.after.id)
            )
        statement = statement.order_by(messages.c.created_at.desc(), messages.c.id.desc())
        return [_message(row) for row in connection.execute(statement.limit(limit))]


class JinjaTemplates:
    """The :class:`notifications.application.Templates` port over the package's templates:
    ``templates/<kind>.subject.txt`` and ``templates/<kind>.body.txt``, plain text. A fact a
    template names and the message does not give is an error, never an empty gap."""

    def __init__(self, environment: Environment | None = None) -> None:
        self.environment = environment or Environment(
            loader=PackageLoader("notifications", "templates"),
            undefined=StrictUndefined,
            # Plain-text mail: nothing is escaped (only .html or .xml templates would be).
            autoescape=select_autoescape(("html", "xml")),
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render(self, kind: Kind, facts: Mapping[str, str]) -> Letter:
        subject = self.environment.get_template(f"{kind.value}.subject.txt").render(facts)
        body = self.environment.get_template(f"{kind.value}.body.txt").render(facts)
        return Letter.of(subject, body)


def compose(mail: Mail, sender: str) -> EmailMessage:
    """The mail as the server gets it. Every send of one message is the same mail: its
    Message-ID and Date come from the message, not from the moment of sending."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Date"] = format_datetime(mail.created_at)
    message["Message-ID"] = mail_id(mail.message_id, sender)
    # RFC 3834: a machine wrote it, so auto-responders do not answer it.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(mail.body)
    return message


class SmtpMailer:
    """The :class:`notifications.application.Mailer` port over SMTP, one connection per mail."""

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        timeout: float,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.timeout = timeout
        self.username = username
        self.password = password
        self.starttls = starttls

    async def send(self, mail: Mail) -> None:
        try:
            await aiosmtplib.send(
                compose(mail, self.sender),
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                start_tls=self.starttls,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as refusal:
            codes = [recipient.code for recipient in refusal.recipients]
            if all(500 <= code < 600 for code in codes):
                raise MailRefused(_said(refusal.recipients[0])) from refusal
            raise MailError(_said(refusal.recipients[0])) from refusal
        except aiosmtplib.SMTPDataError as refusal:
            if 500 <= refusal.code < 600:
                raise MailRefused(_said(refusal)) from refusal
            raise MailError(_said(refusal)) from refusal
        except aiosmtplib.SMTPResponseException as error:
            raise MailError(_said(error)) from error
        except (aiosmtplib.SMTPException, OSError) as error:
            raise MailError(f"{type(error).__name__}: {error}") from error


def _said(answer: aiosmtplib.SMTPResponseException) -> str:
    """What the server answered, as ``550 no such user``."""
    return f"{answer.code} {answer.message}"
