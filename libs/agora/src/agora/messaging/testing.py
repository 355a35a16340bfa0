"""Test helpers for events, re-exported from :mod:`agora_tools.testing` (as nameko ships its own
``entrypoint_waiter``, so every service tests its messaging the same way).

* :class:`InMemoryBus` runs a service's subscription handlers without a broker, with the real
  consumer's inbox semantics: a test publishes an event (or drains a publisher's outbox) and
  looks at the subscriber's database afterwards.
* :func:`wait_for_event` and :func:`collect_events` read a subject of a real NATS JetStream in an
  integration test: what a running service actually published.

    bus = InMemoryBus(SUBSCRIPTIONS, uow)
    delivery = await bus.publish(ProductCreated(...), aggregate="SKU-1")
    await bus.deliver(delivery.event)      # a redelivery: skipped, the inbox has it
    await bus.relay(catalog_uow)           # what catalog's handlers recorded, into the handlers

    event = await wait_for_event(nats_url, "agora.identity.events.UserRegistered.v1",
                                 lambda e: e.data["email"] == "ada@example.com")
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection

from agora.messaging.consumer import Poison, apply, consumer_name
from agora.messaging.envelope import CloudEvent, EventModel, EventType, envelope
from agora.messaging.relay import mark_sent, pending_rows
from agora.messaging.subscriptions import Subscription
from agora.transactions import Transactions

Predicate = Callable[[CloudEvent], bool]

# How often a subject without a stream yet is looked up again: the service that creates the
# stream may still be starting.
STREAM_LOOKUP_PAUSE = 0.1


def _any_event(_: CloudEvent) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one delivery of an event did: the consumers that applied it, and those that skipped
    it because their inbox had it already (both by durable consumer name, as the real ones)."""

    event: CloudEvent
    handled: tuple[str, ...]
    skipped: tuple[str, ...]


class InMemoryBus:
    """A service's subscriptions run in-process, each delivery as the real consumer applies it.

    Every subscription whose event type matches gets the event in a transaction of its own that
    records ``(consumer, event id)`` in ``agora_inbox`` and runs the handler (the consumer's own
    :func:`~agora.messaging.consumer.apply`); an event already in that consumer's inbox is
    skipped. A handler that raises rolls its transaction back, inbox row included, and the error
    reaches the test (the real consumer would retry it); an envelope whose data is not a valid
    event raises :class:`~agora.messaging.consumer.Poison` (the real one dead-letters it).

    ``uow`` is the subscribing service's database, with the ``agora_inbox`` table in it;
    ``service`` names the consumers (default: the unit of work's ``source``).
    """

    def __init__(
        self,
        subscriptions: Sequence[Subscription],
        uow: Transactions,
        *,
        service: str | None = None,
    ) -> None:
        self.subscriptions = tuple(subscriptions)
        self.uow = uow
        self.service = service or uow.source
        self._consumers = [
            (consumer_name(self.service, subscription), subscription)
            for subscription in self.subscriptions
        ]
        names = [name for name, _ in self._consumers]
        if len(set(names)) != len(names):
            raise ValueError(f"two subscriptions of {self.service} share a durable name: {names}")
        self.published: list[CloudEvent] = []
        """Every distinct event that went through the bus, in the order it first came."""
        self.deliveries: list[Delivery] = []
        """Every delivery, redeliveries included."""
        self._seen: set[str] = set()

    async def publish(
        self,
        event: EventModel,
        *,
        aggregate: str,
        event_id: str | None = None,
        source: str | None = None,
    ) -> Delivery:
        """Wrap ``event`` in a CloudEvent about ``aggregate`` and deliver it.

        ``source`` defaults to the publisher named in the event's type; ``event_id`` to a new id.
        """
        cloud_event = envelope(
            event, source=source or EventType(event.type).publisher, subject=aggregate
        )
        if event_id is not None:
            cloud_event = cloud_event.model_copy(update={"id": event_id})
        return await self.deliver(cloud_event)

    async def deliver(self, cloud_event: CloudEvent) -> Delivery:
        """Deliver ``cloud_event`` (again) to every subscription of its type."""
        if cloud_event.id not in self._seen:
            self._seen.add(cloud_event.id)
            self.published.append(cloud_event)
        handled: list[str] = []
        skipped: list[str] = []
        errors: list[Exception] = []
        # Each subscription is a consumer of its own, as on the broker: one failing does not
        # keep the event from the others.
        for name, subscription in self._consumers:
            if str(subscription.event_type) != cloud_event.type:
                continue
            try:
                event = _parse(subscription, cloud_event)
                applied = await self.uow.run(
                    apply, name, cloud_event.id, subscription, event, cloud_event
                )
            except Exception as error:
                errors.append(error)
                continue
            (handled if applied else skipped).append(name)
        delivery = Delivery(cloud_event, tuple(handled), tuple(skipped))
        self.deliveries.append(delivery)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise ExceptionGroup(f"{len(errors)} handlers of {cloud_event.type} failed", errors)
        return delivery

    async def relay(self, publisher: Transactions, *, batch: int = 500) -> list[Delivery]:
        """Deliver every pending event of ``publisher``'s outbox, in outbox order, marking each
        row sent once delivered (as the relay marks it once the broker has it).

        A handler that raises stops the drain there: that row and those after it stay pending.
        """
        deliveries: list[Delivery] = []
        while rows := await publisher.query(pending_rows, batch):
            for row in rows:
                deliveries.append(await self.deliver(CloudEvent.from_bytes(row.payload)))
                await publisher.run(_mark_one_sent, row.seq)
        return deliveries


def _parse(subscription: Subscription, cloud_event: CloudEvent) -> BaseModel:
    try:
        return subscription.event.model_validate(cloud_event.data)
    except ValidationError as error:
        raise Poison(f"not a valid {subscription.event_type} event: {error}") from error


def _mark_one_sent(connection: Connection, seq: int) -> None:
    mark_sent(connection, [seq], datetime.now(UTC))


async def wait_for_event(
    nats_url_or_js: str | JetStreamContext,
    subject: str,
    predicate: Predicate = _any_event,
    *,
    # A parameter rather than the caller's asyncio.timeout: on expiry the error says what was
    # read, which only this function knows.
    timeout: float = 10.0,  # noqa: ASYNC109
    stream: str | None = None,
) -> CloudEvent:
    """The first CloudEvent on ``subject`` (wildcards allowed) for which ``predicate`` holds.

    Reads the stream from its beginning through an ephemeral ordered consumer, so an event
    published before the call is found too. Without ``stream`` the stream holding ``subject``
    is looked up, and waited for while it does not exist yet. Raises :class:`TimeoutError`
    naming the subject when no matching event came within ``timeout`` seconds.
    """
    found = await collect_events(
        nats_url_or_js, subject, 1, predicate, timeout=timeout, stream=stream
    )
    return found[0]


async def collect_events(
    nats_url_or_js: str | JetStreamContext,
    subject: str,
    count: int,
    predicate: Predicate = _any_event,
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 (see wait_for_event)
    stream: str | None = None,
) -> list[CloudEvent]:
    """The first ``count`` CloudEvents on ``subject`` for which ``predicate`` holds, in stream
    order; :class:`TimeoutError` (saying how many came) if fewer came within ``timeout``.

    Messages that are not CloudEvents are passed over.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    deadline = time.monotonic() + timeout
    reader = _Reader(subject, predicate, count)
    connection: Client | None = None
    try:
        async with asyncio.timeout(timeout):
            if isinstance(nats_url_or_js, str):
                connection = await nats.connect(
                    nats_url_or_js, allow_reconnect=False, connect_timeout=min(timeout, 2.0)
                )
                js = connection.jetstream()
            else:
                js = nats_url_or_js
            await reader.read(js, stream, deadline)
    except TimeoutError as error:
        raise TimeoutError(reader.shortfall(timeout)) from error
    finally:
        if connection is not None:
            await connection.close()
    return reader.found


class _Reader:
    def __init__(self, subject: str, predicate: Predicate, count: int) -> None:
        self.subject = subject
        self.predicate = predicate
        self.count = count
        self.found: list[CloudEvent] = []
        self.seen = 0
        self.unreadable = 0
        self.stream: str | None = None

    async def read(self, js: JetStreamContext, stream: str | None, deadline: float) -> None:
        self.stream = stream or await self._find_stream(js)
        sub = await js.subscribe(self.subject, stream=self.stream, ordered_consumer=True)
        try:
            while len(self.found) < self.count:
                msg = await sub.next_msg(timeout=max(0.001, deadline - time.monotonic()))
                self.seen += 1
                try:
                    cloud_event = CloudEvent.from_bytes(msg.data)
                except ValidationError:
                    self.unreadable += 1
                    continue
                if self.predicate(cloud_event):
                    self.found.append(cloud_event)
        finally:
            await sub.unsubscribe()

    async def _find_stream(self, js: JetStreamContext) -> str:
        while True:
            try:
                return await js.find_stream_name_by_subject(self.subject)
            except NotFoundError:
                await asyncio.sleep(STREAM_LOOKUP_PAUSE)

    def shortfall(self, timeout: float) -> str:
        if self.stream is None:
            return f"no stream holds subject {self.subject!r} (waited {timeout:g} s)"
        wanted = "no matching event" if self.count == 1 else f"fewer than {self.count} events"
        message = (
            f"{wanted} on subject {self.subject!r} (stream {self.stream}) within "
            f"{timeout:g} s: {self.seen} messages read, {len(self.found)} matched"
        )
        if self.unreadable:
            message += f", {self.unreadable} not CloudEvents"
        return message
