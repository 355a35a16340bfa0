"""Notifications on SQLite and on PostgreSQL (a database per test, from agora-tools' pytest
plugin): the app with access tokens signed by a test key, a bench that delivers identity's,
orders' and shipping's events through an in-memory bus and runs senders one round at a time on
a clock the test moves, and a mail server of the test's own (aiosmtpd) that keeps what it
accepts.

Tokens are signed here the way identity signs them (EdDSA, ``typ: at+jwt``, a ``kid``); the app
gets a ``TokenVerifier`` whose key source answers with this test key's JWKS.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from agora.db import UnitOfWork
from agora.messaging.testing import Delivery
from agora_tools.pytest_plugin import Clock, Service, on_migrated
from agora_tools.testing import InMemoryBus, SigningKey, User, free_port
from contracts.identity import UserRegistered
from contracts.orders import OrderCancelled, OrderConfirmed
from contracts.shipping import ShipmentDispatched
from notifications import application
from notifications.adapters import JinjaTemplates, SmtpMailer, SqlMessages
from notifications.application import MailboxQuery, Sender, Wake
from notifications.bootstrap import MIGRATIONS, create_app
from notifications.domain import Message
from notifications.entrypoints import subscriptions
from notifications.settings import NotificationsSettings

KEY = SigningKey()
SHOP = "Agora <shop@example.com>"
SEND_TIMEOUT = 2.0
# How long a test waits for what a running service does in the background.
PATIENCE = 10.0

a_user = KEY.user  # a new customer, with the roles it is given besides

SERVICE = Service.standard(NotificationsSettings, create_app, KEY, migrations=MIGRATIONS)
settings_for = SERVICE.settings_for
app_for = SERVICE.app_for


service = SERVICE.fixture()


# --- a mail server -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """A mail the server accepted: the envelope, and the mail as its recipient reads it."""

    mail_from: str
    rcpt_tos: list[str]
    mail: EmailMessage

    @property
    def message_id(self) -> str:
        return str(self.mail["Message-ID"])

    @property
    def body(self) -> str:
        """The text as a mail reader shows it (SMTP carries lines ending in CRLF)."""
        return str(self.mail.get_content()).replace("\r\n", "\n")


class Postbox:
    """An aiosmtpd handler that keeps every mail it accepts, and refuses the recipients in
    ``unknown`` for good (550), as a server does an address it has no mailbox for."""

    def __init__(self, unknown: frozenset[str] = frozenset()) -> None:
        self.unknown = unknown
        self._received: list[Received] = []
        self._lock = threading.Lock()

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.unknown:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.original_content or b""
        mail = message_from_bytes(content, policy=policy.default)
        assert isinstance(mail, EmailMessage)
        with self._lock:
            self._received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), mail))
        return "250 OK: queued"

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def wait_for(self, count: int, timeout: float = PATIENCE) -> list[Received]:
        """The mails once at least ``count`` came; AssertionError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while len(found := self.received) < count:
            assert time.monotonic() < deadline, f"{len(found)} of {count} mails came"
            time.sleep(0.02)
        return found


@contextmanager
def mail_server(
    port: int | None = None, unknown: frozenset[str] = frozenset()
) -> Iterator[tuple[Postbox, int]]:
    """A mail server on 127.0.0.1 (on ``port``, or a free one) for as long as the block runs."""
    postbox = Postbox(unknown)
    port = port or free_port()
    controller = Controller(postbox, hostname="127.0.0.1", port=port, server_hostname="localhost")
    controller.start()
    try:
        yield postbox, port
    finally:
        controller.stop()


@pytest.fixture
def smtp() -> Iterator[tuple[Postbox, int]]:
    with mail_server() as running:
        yield running


# --- the bench ---------------------------------------------------------------------------------


def dispatched(
    shipment_id: str,
    order_id: str,
    user_id: str,
    *,
    carrier: str = "dhl",
    service_level: str = "standard",
    tracking_number: str = "DH0123456789ABCDEF",
) -> ShipmentDispatched:
    """Shipping's news that the carrier collected a shipment, now."""
    return ShipmentDispatched(
        shipment_id=shipment_id,
        order_id=order_id,
        user_id=user_id,
        carrier=carrier,
        service_level=service_level,
        tracking_number=tracking_number,
        dispatched_at=datetime.now(UTC),
    )


def _nothing() -> None:
    """No sender to wake: the bench's senders run when the test says."""


@dataclass
class Bench:
    """Notifications without its HTTP side: events come in through an in-memory bus, senders
    run when the test says so, and the mailboxes are read straight from the database."""

    url: str
    uow: UnitOfWork
    clock: Clock
    bus: InMemoryBus
    opened: list[UnitOfWork] = field(default_factory=list)

    def listen(self, wake: Wake) -> None:
        """Deliver the events to handlers that ring ``wake`` (a sender loop's wakeup)."""
        parts = application.Parts(SqlMessages(), JinjaTemplates(), wake)
        self.bus = InMemoryBus(subscriptions(parts), self.uow)

    async def register(self, user: User) -> Delivery:
        event = UserRegistered(user_id=user.id, email=user.email, registered_at=datetime.now(UTC))
        return await self.bus.publish(event, aggregate=user.id)

    async def confirm(
        self, order_id: str, user: User, total: int = 4250, currency: str = "EUR"
    ) -> Delivery:
        event = OrderConfirmed(order_id=order_id, user_id=user.id, total=total, currency=currency)
        return await self.bus.publish(event, aggregate=order_id)

    async def cancel(self, order_id: str, user: User, reason: str = "out_of_stock") -> Delivery:
        event = OrderCancelled(order_id=order_id, user_id=user.id, reason=reason)
        return await self.bus.publish(event, aggregate=order_id)

    async def dispatch(
        self, shipment_id: str, order_id: str, user: User, **shipment: str
    ) -> Delivery:
        """Shipping's ShipmentDispatched, with :func:`dispatched`'s carrier, service level and
        tracking number unless ``shipment`` names others."""
        event = dispatched(shipment_id, order_id, user.id, **shipment)
        return await self.bus.publish(event, aggregate=shipment_id)

    async def mailbox(self, user: User | None = None) -> list[Message]:
        """A user's messages (everyone's without one), newest first."""
        query = MailboxQuery(limit=1000, user_id=user.id if user else None)
        page = await self.uow.query(application.list_messages, SqlMessages(), query)
        return page.items

    async def message(self, message_id: str) -> Message:
        found = await self.uow.query(lambda session: SqlMessages().get(session, message_id))
        assert found is not None, f"no message {message_id}"
        return found

    def sender(self, port: int, *, replica: bool = False, **options: Any) -> Sender:
        """A sender mailing through the server on ``port``; ``replica``: on a unit of work of its
        own, as another replica's."""
        uow = UnitOfWork(self.url, source="notifications") if replica else self.uow
        if replica:
            self.opened.append(uow)
        mailer = SmtpMailer("127.0.0.1", port, SHOP, timeout=SEND_TIMEOUT)
        values: dict[str, Any] = {
            "timeout": SEND_TIMEOUT,
            "lease": timedelta(seconds=SEND_TIMEOUT + 5),
            "clock": self.clock,
        }
        values.update(options)
        return application.sender(uow, SqlMessages(), mailer, **values)

    async def close(self) -> None:
        for uow in [self.uow, *self.opened]:
            await uow.dispose()


@asynccontextmanager
async def bench_on(url: str) -> AsyncIterator[Bench]:
    """A bench over the database at ``url`` (migrated), closed when the block ends."""
    uow = UnitOfWork(url, source="notifications")
    parts = application.Parts(SqlMessages(), JinjaTemplates(), _nothing)
    made = Bench(url, uow, Clock(), InMemoryBus(subscriptions(parts), uow))
    try:
        yield made
    finally:
        await made.close()


bench = on_migrated(bench_on, "bench")


def act(url: str, action: Callable[[Bench], Awaitable[object]]) -> None:
    """From a synchronous test: run ``action`` on a bench over the database at ``url`` (an app
    under ``TestClient`` keeps its own loop, so the bench needs one of its own)."""

    async def run() -> None:
        async with bench_on(url) as made:
            await action(made)

    asyncio.run(run())
