"""Consumers: each subscription of a service is a durable pull consumer that applies every event
once.

* One durable consumer per (service, subscription), named ``<service>__<durable>``, on the
  publisher's stream (for a command: the receiver's, its own) and filtered to the subject.
  Every replica of the service binds to the same durable, so the broker hands each message to
  one of them.
* A message is applied in a transaction of the unit of work that both records
  ``(consumer, event id)`` in ``agora_inbox`` and runs the handler; it is acked only after that
  commit. A message whose id is in the inbox already (a redelivery: the ack was lost, or the
  process died between commit and ack) is acked and skipped.
* The messages of one fetch share that transaction, each under its own span, and are settled
  one by one after its commit; a handler that raises fails its own message only (ADR 58).
* The ack is the fire-and-forget ``msg.ack()``, not ``ack_sync()``: a lost ack costs one
  redelivery after AckWait, which the inbox turns into a skip, whereas waiting for the server
  would put a round trip on every message.
* A handler that raises is retried: the message is nak'ed with the delay ``backoff`` gives for its
  delivery count (the last one repeats). At the ``max_deliver``-th delivery a failure sends the
  original bytes to the dead-letter subject ``agora.<service>.dead.<durable>`` with the error and
  the handler's name in headers, then the message is terminated. A message that is not a valid
  event for the subscription (poison) is dead-lettered at its first delivery. Either way the
  messages behind it keep flowing.
* The broker's own MaxDeliver sits :data:`DEAD_LETTER_SLACK` deliveries above ``max_deliver``: a
  dead letter that could not be published at the last delivery (the broker went away just then)
  is tried again on the next one instead of the message being dropped silently, while a message
  that kills the process every time is still given up on eventually.
* Broker restarts: an idle fetch ends in ``FetchTimeoutError`` (the broker's heartbeats came);
  a fetch that got no answer at all, an error, or a reconnection (``Broker.on_connect``) makes
  the loop build its pull subscription again, since one can stop receiving after the server
  restarts (nats.py #504). While the broker is disconnected the loops wait for it to come back.
* Lag: every ``lag_interval`` seconds (not per message) a loop reads its durable's figures from
  JetStream and sets the gauges ``agora_consumer_pending_messages`` (in the stream, not yet
  delivered) and ``agora_consumer_ack_pending_messages`` (delivered, not yet acked): the broker
  serves them as JSON only, Prometheus reads them here. The same reading takes the figures of the
  stream the durable reads from, once per stream and interval however many durables read it:
  ``agora_stream_messages`` and ``agora_stream_bytes``, by stream, what it holds (a stream keeps
  its messages until its limits drop them, consumed or not).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime

import structlog
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import FetchTimeoutError
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from prometheus_client import Counter, Gauge, Histogram
from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import DBAPIError

from agora.backoff import Backoff, retrying, warn
from agora.messaging.broker import Broker
from agora.messaging.envelope import CloudEvent, dead_letter_subject, stream_name
from agora.messaging.schema import inbox
from agora.messaging.subscriptions import Subscription
from agora.sql import inserts_if_absent
from agora.tasks import cancel_and_wait
from agora.telemetry import SERVICE
from agora.transactions import Transactions, write_pending

log = structlog.get_logger("agora.consumer")

DEAD_LETTER_SLACK = 3
# Consecutive fetches that got no answer at all (not even a heartbeat) before the pull
# subscription is built again.
SILENT_FETCHES = 2
# Seconds the pull for the messages already waiting behind the first may take (see _fetch).
FOLLOW_UP_FETCH = 0.05
HEADER_LIMIT = 1000  # characters of an error kept in a dead letter's header
# After a loop's failure: the first pause 0.1 to 0.2 s, doubling up to 5 s, for as long as it
# takes.
INTERRUPTED_BACKOFF = Backoff(initial=0.1, max=5.0, jitter=0.1)
# Seconds between two readings of a durable's lag: a few per scrape interval, not one per message.
LAG_INTERVAL = 10.0

EVENTS = Counter(
    "agora_events_consumed_total",
    "Messages taken by a consumer, by outcome: handled, duplicate (already in the inbox), "
    "failed (will be redelivered), dead (sent to the dead letters).",
    ["service", "consumer", "outcome"],
)
HANDLING = Histogram(
    "agora_event_handling_seconds",
    "Time from taking a message to acknowledging it (the handler's transaction included).",
    ["service", "consumer"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

RECEIVED = Counter(
    "agora_messages_received_total",
    "Messages a service took, by sender (the envelope's source; unknown when unreadable) and "
    "kind (event or command). Each counts once per subscription, when settled: applied, or "
    "dead-lettered; a redelivery after a failure or of one already applied does not count again.",
    ["service", "source", "kind"],
)

PENDING = Gauge(
    "agora_consumer_pending_messages",
    "Messages of the consumer's subject in the stream that it has not been delivered yet, as "
    "JetStream last said (read every few seconds, by each replica).",
    ["service", "consumer"],
)
ACK_PENDING = Gauge(
    "agora_consumer_ack_pending_messages",
    "Messages delivered to the consumer and not acknowledged yet, as JetStream last said.",
    ["service", "consumer"],
)

STREAM_MESSAGES = Gauge(
    "agora_stream_messages",
    "Messages the JetStream stream holds, as JetStream last said (read every few seconds by each "
    "replica of every service consuming from it).",
    ["stream"],
)
STREAM_BYTES = Gauge(
    "agora_stream_bytes",
    "Bytes the JetStream stream holds, as JetStream last said.",
    ["stream"],
)

AfterCommit = Callable[[Msg], Awaitable[None]]


class DeadLetterHeaders:
    """The headers a dead letter carries besides the original message's own."""

    ERROR = "Agora-Error"
    HANDLER = "Agora-Handler"
    ORIGINAL_SUBJECT = "Agora-Original-Subject"
    EVENT_ID = "Agora-Event-Id"
    CONSUMER = "Agora-Consumer"
    DELIVERED = "Agora-Delivered"


def own_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """A message's own headers (``traceparent``), without the broker's (``Nats-``) or those a
    dead letter adds (``Agora-``)."""
    return {
        key: value
        for key, value in (headers or {}).items()
        if not key.startswith(("Nats-", "Agora-"))
    }


def consumer_name(service: str, subscription: Subscription) -> str:
    """The durable consumer of ``service`` for ``subscription`` (JetStream names take no dots)."""
    return f"{service}__{subscription.durable}".replace(".", "_")


def handler_name(subscription: Subscription) -> str:
    handler = subscription.handler
    return f"{handler.__module__}.{getattr(handler, '__qualname__', repr(handler))}"


def apply(
    connection: Connection,
    consumer: str,
    event_id: str,
    subscription: Subscription,
    event: BaseModel,
    envelope: CloudEvent,
) -> bool:
    """Record the event in the inbox and run the handler, in the caller's transaction.

    False (and the handler not run) when this consumer has the event in its inbox already.
    """
    if not _record_in_inbox(connection, consumer, event_id):
        return False
    subscription.handler(connection, event, envelope)
    return True


# ON CONFLICT DO NOTHING rather than look-then-insert: on PostgreSQL a replica applying the same
# event concurrently waits for the other's commit and then finds it, instead of failing the whole
# transaction on the primary key. Built once: this runs for every message, and building the
# statement cost more than the insert itself.
_INBOX_INSERT = inserts_if_absent(inbox)


def _record_in_inbox(connection: Connection, consumer: str, event_id: str) -> bool:
    row = {"consumer": consumer, "event_id": event_id, "handled_at": datetime.now(UTC)}
    statement = _INBOX_INSERT.get(connection.dialect.name)
    if statement is not None:
        return bool(connection.execute(statement, row).rowcount)
    seen = connection.execute(
        select(inbox.c.event_id).where(inbox.c.consumer == consumer, inbox.c.event_id == event_id)
    ).first()
    if seen is not None:
        return False
    connection.execute(insert(inbox), row)
    return True


class _Taken:
    """A message in hand: its span, started when it was taken, and what its envelope said."""

    __slots__ = (
        "delivered",
        "envelope",
        "error",
        "event",
        "event_id",
        "msg",
        "source",
        "span",
        "started",
    )

    def __init__(self, msg: Msg, span: Span, delivered: int, event_id: str) -> None:
        self.msg = msg
        self.span = span
        self.delivered = delivered
        self.event_id = event_id
        self.started = time.perf_counter()
        self.source = "unknown"
        self.envelope: CloudEvent | None = None
        self.event: BaseModel | None = None
        self.error: Exception | None = None


class _HandlerFailed(Exception):
    """The handler of the ``index``-th message of a batch raised ``error``."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(index, error)
        self.index = index
        self.error = error


def apply_each(
    connection: Connection, consumer: str, subscription: Subscription, taken: Sequence[_Taken]
) -> list[bool]:
    """:func:`apply` each message in turn, in the caller's transaction, under its own span, its
    events written as it returns; for each, whether it was applied (False: in the inbox already).

    A handler's error comes out as :class:`_HandlerFailed`, naming the message; a database error
    comes out as it is, for the unit of work to retry the transaction when it may.
    """
    applied: list[bool] = []
    for index, one in enumerate(taken):
        assert one.envelope is not None
        assert one.event is not None
        # The error is the batch's to record, on this message's span, when it settles it.
        with trace.use_span(
            one.span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        ):
            try:
                applied.append(
                    apply(connection, consumer, one.event_id, subscription, one.event, one.envelope)
                )
                write_pending(connection)
            except DBAPIError:
                raise
            except Exception as error:
                raise _HandlerFailed(index, error) from error
    return applied


class Poison(ValueError):
    """The message is not a valid event for the subscription; no retry will change that."""


class Consumers:
    """Runs every subscription of one service against the broker until cancelled."""

    def __init__(
        self,
        service: str,
        uow: Transactions,
        broker: Broker,
        subscriptions: Sequence[Subscription],
        *,
        ack_wait: float,
        max_deliver: int,
        backoff: Sequence[float],
        batch: int = 100,
        fetch_timeout: float = 5.0,
        lag_interval: float = LAG_INTERVAL,
        after_commit: AfterCommit | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        if max_deliver < 1:
            raise ValueError("max_deliver must be at least 1")
        self.service = service
        self.uow = uow
        self.broker = broker
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.backoff = tuple(backoff)
        self.batch = batch
        self.fetch_timeout = fetch_timeout
        self.lag_interval = lag_interval
        # Runs between the commit and the ack: a test makes the consumer die exactly there.
        self.after_commit = after_commit
        self.tracer = trace.get_tracer("agora.messaging", tracer_provider=tracer_provider)
        self.loops = [_Loop(self, subscription) for subscription in subscriptions]
        # Set by stop(): no loop starts on another message.
        self.stopping = False
        self._settled = asyncio.Event()
        # When each stream's figures are next read (monotonic seconds), by stream.
        self._stream_due: dict[str, float] = {}
        names = [loop.name for loop in self.loops]
        if len(set(names)) != len(names):
            raise ValueError(f"two subscriptions of {service} share a durable name: {names}")
        broker.on_connect(self._reconnected)

    async def run(self) -> None:
        """Consume until cancelled (or until one subscription's loop fails)."""
        tasks = [
            asyncio.create_task(loop.run(), name=f"consumer:{loop.name}") for loop in self.loops
        ]
        if not tasks:
            return
        try:
            # Not gather, nor a TaskGroup: cancelled, each cancels its tasks once and waits for
            # them before it lets the cancellation through, so a loop that lost that one
            # cancellation (see agora.tasks) kept it waiting for ever and its caller with it. A
            # wait is cancelled at once, and the loops are then stopped below.
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a loop's failure is this one's
        finally:
            # Cancelled again while stopping them, it still waits for them: no loop is left
            # running behind it.
            while True:
                try:
                    await cancel_and_wait(tasks)
                    break
                except asyncio.CancelledError:
                    continue

    async def stop(self, within: float) -> None:
        """Take no more messages and wait (at most ``within`` seconds) for those in hand to be
        applied and acked; the caller then cancels :meth:`run`, which only interrupts fetches."""
        self.stopping = True
        deadline = time.monotonic() + within
        while any(loop.handling for loop in self.loops):
            self._settled.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("consumers stopped with a message in hand", service=self.service)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), timeout=remaining)

    def redelivery_delay(self, delivered: int) -> float | None:
        """The pause before delivery ``delivered + 1``; None means at once."""
        if not self.backoff:
            return None
        return self.backoff[min(delivered, len(self.backoff)) - 1]

    async def read_stream(self, stream: str) -> None:
        """Set the stream gauges from JetStream's figures for ``stream``, unless another of this
        service's loops read them less than ``lag_interval`` ago. A service's broker user may
        read the info of the streams it consumes from (ADR 25)."""
        now = time.monotonic()
        if now < self._stream_due.get(stream, 0.0):
            return
        self._stream_due[stream] = now + self.lag_interval
        try:
            info = await self.broker.js.stream_info(stream)
        except (NatsError, TimeoutError) as error:
            log.debug("could not read the stream's figures", stream=stream, error=repr(error))
            return
        STREAM_MESSAGES.labels(stream).set(info.state.messages)
        STREAM_BYTES.labels(stream).set(info.state.bytes)

    async def _reconnected(self) -> None:
        for loop in self.loops:
            loop.resubscribe()


class _Loop:
    """Fetches and applies the messages of one subscription."""

    def __init__(self, owner: Consumers, subscription: Subscription) -> None:
        self.owner = owner
        self.subscription = subscription
        self.name = consumer_name(owner.service, subscription)
        self.handler = handler_name(subscription)
        self.publisher = subscription.event_type.publisher
        # agora.<receiver>.commands.<Name>.v<N> or agora.<publisher>.events.<Name>.v<N>
        self.kind = "command" if subscription.subject.split(".")[2] == "commands" else "event"
        self.dead_subject = dead_letter_subject(owner.service, subscription.durable)
        self._sub: JetStreamContext.PullSubscription | None = None
        self._stale = True
        # Consecutive fetches that got no answer at all.
        self._silent = 0
        self._wake = asyncio.Event()
        self._warn_interrupted = warn(
            log, "consumer interrupted, resubscribing", consumer=self.name
        )
        self.handling = False
        # When the durable's lag is next read (monotonic seconds): at once, then every interval.
        self._lag_due = 0.0

    def resubscribe(self) -> None:
        """Build the pull subscription again before the next fetch (after a reconnection)."""
        self._stale = True
        self._wake.set()

    async def run(self) -> None:
        try:
            while not self.owner.stopping:
                await retrying(self._step, INTERRUPTED_BACKOFF, failed=self._interrupted)
        finally:
            await self._unsubscribe()

    async def _step(self) -> None:
        """One pass: wait for the broker, or fetch the next messages and apply them."""
        if self.owner.stopping:
            return
        if not self.owner.broker.connected:
            await self._wait_for_broker()
            return
        sub = await self._subscription()
        if time.monotonic() >= self._lag_due:
            await self._read_lag()
        try:
            messages = await self._fetch(sub)
        except FetchTimeoutError:
            self._silent = 0  # idle: the broker's heartbeats came
            return
        except TimeoutError:
            self._silent += 1
            if self._silent >= SILENT_FETCHES:
                log.info("consumer heard nothing, resubscribing", consumer=self.name)
                self._stale = True
                self._silent = 0
            return
        self._silent = 0
        if self.owner.stopping:
            # Handed back at once: another replica takes them without waiting out the ack wait.
            for message in messages:
                await _hand_back(message)
            return
        self.handling = True
        try:
            await self.handle(messages)
        finally:
            self.handling = False
            self.owner._settled.set()

    def _interrupted(self, error: Exception, failures: int, pause: float) -> None:
        self._warn_interrupted(error, failures, pause)
        self._stale = True

    async def _fetch(self, sub: JetStreamContext.PullSubscription) -> list[Msg]:
        """The next messages: waits for one, then takes at once those already waiting behind it.

        A pull for a whole batch would not do: nats-py's fetch of N keeps collecting until N
        have come or the pull expires, so a lone message on a quiet subject would wait out the
        whole fetch timeout. A pull for one returns as soon as it arrives; the broker says with
        it how many more wait (``num_pending``), and a pull for exactly those is answered at once.
        The short timeout of that second pull only matters when another replica took some of
        them in between.
        """
        owner = self.owner
        first = await sub.fetch(1, timeout=owner.fetch_timeout, heartbeat=owner.fetch_timeout / 4)
        waiting = min(first[-1].metadata.num_pending, owner.batch - 1)
        if waiting <= 0:
            return first
        try:
            return [*first, *await sub.fetch(waiting, timeout=FOLLOW_UP_FETCH)]
        except (TimeoutError, FetchTimeoutError):
            return first

    async def _wait_for_broker(self) -> None:
        # Woken by the broker's reconnection; the timeout only bounds a missed wake-up.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=1.0)
        self._wake.clear()

    async def _subscription(self) -> JetStreamContext.PullSubscription:
        if self._sub is not None and not self._stale:
            return self._sub
        await self._unsubscribe()
        broker = self.owner.broker
        # The publisher's stream may not exist yet (its service never ran): make it, so this
        # consumer can start first; this service's own stream holds its dead letters.
        if self.publisher != self.owner.service:
            await broker.find_stream(self.publisher)
        await broker.ensure_stream(self.owner.service)
        await self._declare()
        self._sub = await broker.js.pull_subscribe_bind(
            durable=self.name, stream=stream_name(self.publisher)
        )
        self._stale = False
        log.info("consumer subscribed", consumer=self.name, subject=self.subscription.subject)
        return self._sub

    async def _declare(self) -> ConsumerInfo:
        """Create the durable, or update its settings (AckWait, MaxDeliver) to this process's;
        every replica sends the same. The answer is the durable's info, its lag included."""
        js: JetStreamContext = self.owner.broker.js
        return await js.add_consumer(
            stream_name(self.publisher),
            ConsumerConfig(
                name=self.name,
                durable_name=self.name,
                filter_subject=self.subscription.subject,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self.owner.ack_wait,
                max_deliver=self.owner.max_deliver + DEAD_LETTER_SLACK,
                deliver_policy=DeliverPolicy.ALL,
            ),
        )

    async def _read_lag(self) -> None:
        """Set the lag gauges from JetStream's figures for this durable.

        Read through the same create it was declared with, not a consumer info request: a
        service's broker user may create its own durables but reads no consumer's info (ADR 25),
        and a create with unchanged settings changes nothing and answers with the durable's info.
        """
        self._lag_due = time.monotonic() + self.owner.lag_interval
        try:
            info = await self._declare()
        except (NatsError, TimeoutError) as error:
            # The next reading tries again; the messages matter more than their count.
            log.debug("could not read the consumer's lag", consumer=self.name, error=repr(error))
            return
        PENDING.labels(self.owner.service, self.name).set(info.num_pending or 0)
        ACK_PENDING.labels(self.owner.service, self.name).set(info.num_ack_pending or 0)
        await self.owner.read_stream(stream_name(self.publisher))

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is None:
            return
        try:
            await sub.unsubscribe()
        except Exception as error:  # the connection it lived on may be gone: nothing to undo
            log.debug("unsubscribe failed", consumer=self.name, error=repr(error))

    async def handle(self, messages: Sequence[Msg]) -> None:
        """Apply the messages of one fetch and settle each with the broker: ack, nak, or
        dead-letter. Those that are valid events are applied together, in one transaction
        (:meth:`_apply`); each keeps its own span, outcome and ack."""
        taken = [self._take(msg) for msg in messages]
        try:
            await self._apply([t for t in taken if t.error is None])
            for unreadable in taken:
                if unreadable.error is not None:
                    await self._settle_failed(unreadable, unreadable.error)
        finally:
            for t in taken:
                if t.span.is_recording():  # interrupted before it was settled
                    t.span.end()

    def _take(self, msg: Msg) -> _Taken:
        """Start the message's span, a child of the span that recorded the event, and read its
        envelope; a message that is no valid event keeps the error instead."""
        owner = self.owner
        delivered = msg.metadata.num_delivered
        span = owner.tracer.start_span(
            f"{msg.subject} process",
            context=propagate.extract(dict(msg.headers or {})),
            kind=SpanKind.CONSUMER,
            attributes={
                SERVICE: owner.service,
                "messaging.system": "nats",
                "messaging.operation.type": "process",
                "messaging.destination.name": msg.subject,
                "messaging.consumer.group.name": self.name,
                "messaging.message.delivery_count": delivered,
            },
        )
        taken = _Taken(msg, span, delivered, _fallback_id(msg))
        try:
            taken.envelope, taken.event = self._parse(msg)
        except Exception as error:  # Poison is dead-lettered at once, anything else retried
            taken.error = error
            return taken
        taken.event_id = taken.envelope.id
        taken.source = taken.envelope.source
        span.set_attribute("messaging.message.id", taken.event_id)
        span.set_attribute("agora.event_type", taken.envelope.type)
        if taken.envelope.subject is not None:
            # The aggregate the message is about (an order id finds its checkout).
            span.set_attribute("agora.subject", taken.envelope.subject)
        return taken

    async def _apply(self, taken: list[_Taken]) -> None:
        """Apply ``taken`` in one transaction, in order, and settle each once it committed.

        A commit per message cost about a sixth of a consumer's CPU (ADR 58). When a handler
        raises, the transaction is rolled back whole and that message is settled as failed with
        its error, as it would have been alone: what it saw included the changes of the messages
        before it, as it would have had they committed first. Those before it are applied again
        together, those after it in a transaction of their own. So a failing handler runs once
        per delivery, as before. A failure that is not a handler's (the commit, a database that
        stayed busy) gets each message applied alone.
        """
        owner = self.owner
        while taken:
            try:
                applied = await owner.uow.run(apply_each, self.name, self.subscription, taken)
            except _HandlerFailed as failed:
                if failed.index:
                    await self._apply(taken[: failed.index])
                await self._settle_failed(taken[failed.index], failed.error)
                taken = taken[failed.index + 1 :]
                continue
            except Exception as error:
                if len(taken) == 1:
                    await self._settle_failed(taken[0], error)
                    return
                for one in taken:
                    await self._apply([one])
                return
            for one, was_applied in zip(taken, applied, strict=True):
                await self._settle_applied(one, was_applied)
            return

    async def _settle_applied(self, taken: _Taken, applied: bool) -> None:
        with trace.use_span(taken.span, end_on_exit=False):
            if self.owner.after_commit is not None:
                await self.owner.after_commit(taken.msg)
            await taken.msg.ack()
        self._settled(taken, "handled" if applied else "duplicate")

    async def _settle_failed(self, taken: _Taken, error: Exception) -> None:
        with trace.use_span(taken.span, end_on_exit=False):
            taken.span.record_exception(error)
            taken.span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            outcome = await self._failed(taken.msg, taken.event_id, taken.delivered, error)
        self._settled(taken, outcome)

    def _settled(self, taken: _Taken, outcome: str) -> None:
        owner = self.owner
        taken.span.set_attribute("agora.outcome", outcome)
        taken.span.end()
        EVENTS.labels(owner.service, self.name, outcome).inc()
        if outcome in ("handled", "dead"):
            RECEIVED.labels(owner.service, taken.source, self.kind).inc()
        HANDLING.labels(owner.service, self.name).observe(time.perf_counter() - taken.started)

    def _parse(self, msg: Msg) -> tuple[CloudEvent, BaseModel]:
        try:
            envelope = CloudEvent.from_bytes(msg.data)
            return envelope, self.subscription.event.model_validate(envelope.data)
        except ValidationError as error:
            raise Poison(f"not a valid {self.subscription.event_type} event: {error}") from error

    async def _failed(self, msg: Msg, event_id: str, delivered: int, error: Exception) -> str:
        poison = isinstance(error, Poison)
        log.warning(
            "poison message" if poison else "handler failed",
            consumer=self.name,
            handler=self.handler,
            event_id=event_id,
            subject=msg.subject,
            delivered=delivered,
            max_deliver=self.owner.max_deliver,
            error=repr(error),
            exc_info=not poison,
        )
        if not poison and delivered < self.owner.max_deliver:
            await msg.nak(delay=self.owner.redelivery_delay(delivered))
            return "failed"
        try:
            await self._dead_letter(msg, event_id, delivered, error)
        except Exception as publish_error:
            # Not settled: the broker delivers it again (its MaxDeliver has slack for this) and
            # the dead letter is tried again then.
            log.error(
                "could not dead-letter, will retry on redelivery",
                consumer=self.name,
                event_id=event_id,
                error=repr(publish_error),
            )
            await msg.nak(delay=self.owner.redelivery_delay(delivered))
            return "failed"
        await msg.term()
        return "dead"

    async def _dead_letter(self, msg: Msg, event_id: str, delivered: int, error: Exception) -> None:
        headers = own_headers(msg.headers)
        headers.update(
            {
                DeadLetterHeaders.ERROR: _one_line(f"{type(error).__name__}: {error}"),
                DeadLetterHeaders.HANDLER: self.handler,
                DeadLetterHeaders.ORIGINAL_SUBJECT: msg.subject,
                DeadLetterHeaders.EVENT_ID: event_id,
                DeadLetterHeaders.CONSUMER: self.name,
                DeadLetterHeaders.DELIVERED: str(delivered),
                # Keyed by the original message's stream position: a dead letter published
                # twice for one delivery is dropped by the broker, a replayed event that fails
                # again (a new message) makes a new one.
                "Nats-Msg-Id": f"{event_id}:dead:{self.name}:{msg.metadata.sequence.stream}",
            }
        )
        await self.owner.broker.js.publish(self.dead_subject, msg.data, headers=headers)
        log.error(
            "event dead-lettered",
            consumer=self.name,
            handler=self.handler,
            event_id=event_id,
            subject=self.dead_subject,
            delivered=delivered,
        )


async def _hand_back(msg: Msg) -> None:
    try:
        await msg.nak()
    except Exception as error:  # the broker redelivers it after the ack wait anyway
        log.debug("could not hand a message back", error=repr(error))


def _fallback_id(msg: Msg) -> str:
    """An id for a message whose envelope cannot be read: its Nats-Msg-Id, or its position."""
    headers = msg.headers or {}
    message_id = headers.get("Nats-Msg-Id")
    if message_id:
        return message_id
    return f"{msg.metadata.stream}:{msg.metadata.sequence.stream}"


def _one_line(text: str) -> str:
    # A header is one line of ASCII on the wire.
    flat = " ".join(text.split()).encode("ascii", "backslashreplace").decode("ascii")
    return flat if len(flat) <= HEADER_LIMIT else flat[: HEADER_LIMIT - 3] + "..."
