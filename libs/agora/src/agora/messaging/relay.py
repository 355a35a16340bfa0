"""The relay: publishes the outbox to JetStream, and marks a row sent only once the broker has
acknowledged it.

* It wakes at once when a commit wrote events (the unit of work calls :meth:`Relay.wake`), and
  otherwise looks every ``idle_poll`` seconds, for rows another replica's commit wrote or a wake
  that came while it was busy.
* Rows are claimed by ``status = 'pending'`` in ``seq`` order, never by a high-water mark. A
  batch goes out in waves (ADR 51): the first row of every aggregate in it, sent together without
  awaiting each publish in turn, then, once those acks are back, each aggregate's second row, and
  so on. An aggregate whose row was refused or not acknowledged sends nothing more in this batch,
  so per aggregate the order holds even when a publish fails half-way; the acknowledged rows are
  marked sent in one update.
* Every publish carries ``Nats-Msg-Id`` = the event id: a row published twice (a relay that died
  between the ack and the mark, or two replicas' relays taking the same row) is dropped by the
  stream's de-duplication window.
* A batch is one span. A row recorded in a trace still gets its own producer span in that trace,
  and its message carries that span's context, so the consumer's span continues the trace that
  recorded the event; the batch's span links to each such trace. A row recorded outside any
  trace gets no span of its own: its message carries the batch's context.
* A pass that found ``linger_after`` rows or more says events are committed faster than passes
  go: the relay then waits ``linger`` seconds before its next pass, so that the next batch is
  fuller and the look, the batch's span and the update that marks rows sent are paid for many
  rows instead of a few (ADR 60). A pass of fewer rows, as at any lower rate, is followed by none:
  a single event goes out as soon as its commit wakes the relay.
* While the broker is away it backs off (up to ``backoff_max``) and tries again for as long as it
  takes: an event is never given up on.
* Each look at the outbox sets two gauges from the rows it read (no query of their own, but a
  count when a full batch says more may wait): how many rows wait, and when the oldest of them
  was recorded, or the look's own time when none does. ``time() - oldest`` therefore grows for
  as long as the relay cannot publish, whatever the reason (ADR 34's AgoraOutboxStuck).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import NoStreamResponseError
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue
from prometheus_client import Counter, Gauge
from sqlalchemy import Connection, bindparam, func, inspect, select, update

from agora.backoff import Backoff, retrying, warn
from agora.messaging.broker import Broker
from agora.messaging.schema import outbox
from agora.telemetry import SERVICE
from agora.transactions import Transactions

if TYPE_CHECKING:
    from agora.settings import ServiceSettings

log = structlog.get_logger("agora.relay")
tracer = trace.get_tracer("agora.messaging")

PUBLISHED = Counter(
    "agora_outbox_published_total",
    "Outbox rows acknowledged by the broker (duplicate: the broker had it already).",
    ["service", "outcome"],
)
WAITING = Gauge(
    "agora_outbox_pending",
    "Outbox rows waiting to be published, at the relay's last look.",
    ["service"],
)
OLDEST = Gauge(
    "agora_outbox_oldest_pending_timestamp_seconds",
    "When the oldest outbox row waiting to be published was recorded, at the relay's last look; "
    "the time of that look when none waits.",
    ["service"],
)


@dataclass(frozen=True, slots=True)
class Pending:
    seq: int
    id: str
    aggregate: str
    subject: str
    payload: bytes
    traceparent: str | None
    type: str
    created_at: datetime


def pending_rows(connection: Connection, limit: int) -> list[Pending]:
    rows = connection.execute(
        select(
            outbox.c.seq,
            outbox.c.id,
            outbox.c.aggregate,
            outbox.c.subject,
            outbox.c.payload,
            outbox.c.traceparent,
            outbox.c.type,
            outbox.c.created_at,
        )
        .where(outbox.c.status == "pending")
        .order_by(outbox.c.seq)
        .limit(limit)
    )
    return [Pending(*row) for row in rows]


# Built once, the rows and the time passed at execution (ADR 57): it marks every batch published.
_MARK_SENT = (
    update(outbox)
    .where(outbox.c.seq.in_(bindparam("seqs", expanding=True)), outbox.c.status == "pending")
    .values(status="sent", sent_at=bindparam("at"))
)


def mark_sent(connection: Connection, seqs: Sequence[int], at: datetime) -> None:
    connection.execute(_MARK_SENT, {"seqs": list(seqs), "at": at})


def has_outbox(connection: Connection) -> bool:
    """Whether this service's migrations made an outbox (a service that publishes nothing has
    none, and needs no relay)."""
    return inspect(connection).has_table(outbox.name)


def backlog(connection: Connection) -> int:
    """How many events wait to be published."""
    return int(
        connection.execute(
            select(func.count()).select_from(outbox).where(outbox.c.status == "pending")
        ).scalar_one()
    )


@dataclass(frozen=True, slots=True)
class Look:
    """One look at the outbox: up to a batch of its pending rows, and how many wait in all."""

    rows: list[Pending]
    waiting: int


def look(connection: Connection, limit: int) -> Look:
    rows = pending_rows(connection, limit)
    # Fewer than a batch is all of them: count only when a full batch says more may wait.
    return Look(rows, backlog(connection) if len(rows) >= limit else len(rows))


def _timestamp(moment: datetime) -> float:
    # SQLite keeps no time zone, and the outbox records UTC (agora.messaging.outbox).
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


class Relay:
    def __init__(
        self,
        uow: Transactions,
        broker: Broker,
        *,
        service: str,
        batch: int = 500,
        idle_poll: float = 1.0,
        backoff_max: float = 5.0,
        publish_timeout: float = 5.0,
        linger: float = 0.005,
        linger_after: int = 8,
        after_publish: Callable[[Sequence[int]], Awaitable[None]] | None = None,
    ) -> None:
        self.uow = uow
        self.broker = broker
        self.service = service
        self.batch = batch
        self.idle_poll = idle_poll
        self.backoff_max = backoff_max
        self.publish_timeout = publish_timeout
        self.linger = linger
        self.linger_after = linger_after
        # Runs between the broker's acks and marking the rows sent: a test makes the relay die
        # exactly there.
        self.after_publish = after_publish
        self._wake = asyncio.Event()

    @classmethod
    def of_service(
        cls, uow: Transactions, broker: Broker, settings: ServiceSettings, *, service: str
    ) -> Relay:
        """The relay as a service runs it: its batch and its linger from the service's settings."""
        return cls(
            uow,
            broker,
            service=service,
            batch=settings.relay_batch,
            linger=settings.relay_linger,
            linger_after=settings.relay_linger_after,
        )

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Publish until cancelled."""
        # The first pause 0.05 to 0.1 s, doubling up to backoff_max: for as long as it takes.
        backoff = Backoff(initial=0.05, max=self.backoff_max, jitter=0.05)
        could_not_publish = warn(log, "relay could not publish, retrying")
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.idle_poll)
            self._wake.clear()
            taken = await retrying(self._publish_all, backoff, failed=could_not_publish)
            if self.linger > 0 and taken >= self.linger_after:
                # Rows come faster than passes go: let the next batch fill (ADR 60). The commits
                # meanwhile set the wake, so the next pass starts as soon as this ends.
                await asyncio.sleep(self.linger)

    async def _publish_all(self) -> int:
        """Passes until one takes less than a full batch; how many rows they took in all."""
        taken = 0
        while True:
            rows = await self.publish_pending()
            taken += rows
            if rows < self.batch:  # less than a full batch was all that waited
                return taken

    async def flush(self, within: float) -> None:
        """The last pass of a stopping process: publish what is committed, for at most
        ``within`` seconds. What is left stays in the outbox for another replica's relay."""
        try:
            async with asyncio.timeout(within):
                await self._publish_all()
        except Exception as error:
            log.warning("relay stopped with events unpublished", error=repr(error))

    async def publish_pending(self) -> int:
        """One round: publish up to ``batch`` pending rows; how many were taken.

        Raises when nothing at all could be published (the broker is away), after marking what
        was acknowledged.
        """
        seen = await self.uow.query(look, self.batch)
        rows = seen.rows
        WAITING.labels(self.service).set(seen.waiting)
        OLDEST.labels(self.service).set(
            min(_timestamp(row.created_at) for row in rows) if rows else time.time()
        )
        if not rows:
            return 0
        js = self.broker.js  # raises BrokerUnavailable while disconnected
        acked, errors = await self._publish_batch(js, rows)
        if acked:
            if self.after_publish is not None:
                await self.after_publish(acked)
            await self.uow.run(mark_sent, acked, datetime.now(UTC))
        if errors and not acked:
            raise errors[0]
        if errors:
            log.warning("some events not published yet", failed=len(errors), published=len(acked))
        return len(rows)

    async def _publish_batch(
        self, js: JetStreamContext, rows: list[Pending]
    ) -> tuple[list[int], list[BaseException]]:
        """Publish ``rows`` in waves, one row of each aggregate a wave; the rows acknowledged
        (wave by wave) and the errors of those that were not."""
        queues: dict[str, deque[Pending]] = {}
        for row in rows:  # in seq order, so each queue is its aggregate's order
            queues.setdefault(row.aggregate, deque()).append(row)
        parents = {row.seq: _parent(row.traceparent) for row in rows if row.traceparent}
        batch = tracer.start_span(
            "outbox publish",
            context=Context(),  # a trace of its own: each row's trace is its recording's
            kind=SpanKind.PRODUCER,
            attributes={
                SERVICE: self.service,
                "messaging.system": "nats",
                "messaging.operation.type": "send",
                "messaging.batch.message_count": len(rows),
            },
            links=[Link(_span_context(parent)) for parent in parents.values()],
        )
        # A row recorded outside any trace continues the batch's.
        untraced: dict[str, str] = {}
        _TRACE_CONTEXT.inject(untraced, context=trace.set_span_in_context(batch))
        acked: list[int] = []
        errors: list[BaseException] = []
        outcomes: dict[str, int] = {}
        wave = [self._outgoing(queue.popleft(), parents, untraced) for queue in queues.values()]
        try:
            while wave:
                await self._send(js, wave)
                following: list[_Outgoing] = []
                missing: dict[str, list[_Outgoing]] = {}
                for out in wave:
                    error = out.error()
                    if error is None:
                        outcome = out.acknowledged()
                        outcomes[outcome] = outcomes.get(outcome, 0) + 1
                        acked.append(out.row.seq)
                        queue = queues[out.row.aggregate]
                        if queue:  # the aggregate's next row, now that this one is in
                            following.append(self._outgoing(queue.popleft(), parents, untraced))
                    elif isinstance(error, NoStreamResponseError) and not out.retried:
                        # No stream takes the subject yet: a command to a service that has
                        # never run. Make its stream, as a consumer of it would, and send the
                        # row again: the command waits there.
                        out.retried = True
                        missing.setdefault(out.row.subject.split(".")[1], []).append(out)
                    else:  # this aggregate's later rows wait for this one
                        out.failed(error)
                        errors.append(error)
                wave = following
                for service, outs in missing.items():
                    try:
                        await self.broker.find_stream(service)
                    except Exception as error:
                        for out in outs:
                            out.failed(error)
                            errors.append(error)
                    else:
                        wave.extend(outs)
        finally:
            for out in wave:
                out.abandon()
            for outcome, count in outcomes.items():
                PUBLISHED.labels(self.service, outcome).inc(count)
            batch.set_attribute("agora.published", len(acked))
            if errors:
                batch.set_attribute("agora.failed", len(errors))
                batch.set_status(Status(StatusCode.ERROR, type(errors[0]).__name__))
            batch.end()
        return acked, errors

    def _outgoing(
        self, row: Pending, parents: dict[int, Context], untraced: dict[str, str]
    ) -> _Outgoing:
        parent = parents.get(row.seq)
        if parent is None:
            return _Outgoing(row, None, {"Nats-Msg-Id": row.id, **untraced})
        attributes: dict[str, AttributeValue] = {
            SERVICE: self.service,
            "messaging.system": "nats",
            "messaging.destination.name": row.subject,
            "messaging.message.id": row.id,
            "agora.event_type": row.type,
        }
        if row.aggregate:
            # The envelope's subject: the aggregate it is about (an order id finds its checkout).
            attributes["agora.subject"] = row.aggregate
        span = tracer.start_span(
            f"{row.subject} publish", context=parent, kind=SpanKind.PRODUCER, attributes=attributes
        )
        headers = {"Nats-Msg-Id": row.id}
        _TRACE_CONTEXT.inject(headers, context=trace.set_span_in_context(span))
        return _Outgoing(row, span, headers)

    async def _send(self, js: JetStreamContext, wave: list[_Outgoing]) -> None:
        """Send every row of ``wave`` without awaiting each ack in turn, then wait for the acks,
        at most ``publish_timeout`` for each slice of them."""
        for start in range(0, len(wave), IN_FLIGHT):
            waiting: list[asyncio.Future[PubAck]] = []
            for out in wave[start : start + IN_FLIGHT]:
                try:
                    out.ack = await js.publish_async(
                        out.row.subject, out.row.payload, headers=out.headers
                    )
                except Exception as error:  # the connection went away under the send
                    out.refused = error
                else:
                    waiting.append(out.ack)
            if waiting:
                # A refusal counts as no answer too: nats-py leaves the future of an asynchronous
                # publish the broker refused unresolved (nats.py #985).
                _, late = await asyncio.wait(waiting, timeout=self.publish_timeout)
                for future in late:
                    future.cancel()  # its row counts as not acknowledged; nats-py forgets it


# nats-py's JetStream context allows 4,000 asynchronous publishes awaiting their acks, and makes
# the next one wait for room without a bound: a wave never has more than this in flight.
IN_FLIGHT = 1000
# The outbox keeps a row's W3C traceparent, nothing else of its context.
_TRACE_CONTEXT = TraceContextTextMapPropagator()


def _parent(traceparent: str) -> Context:
    return _TRACE_CONTEXT.extract({"traceparent": traceparent})


def _span_context(context: Context) -> SpanContext:
    return trace.get_current_span(context).get_span_context()


class _Outgoing:
    """One row on its way: its headers, its span when it was recorded in a trace, and what the
    broker answered."""

    __slots__ = ("ack", "headers", "refused", "retried", "row", "span")

    def __init__(self, row: Pending, span: Span | None, headers: dict[str, str]) -> None:
        self.row = row
        self.span = span
        self.headers = headers
        self.ack: asyncio.Future[PubAck] | None = None
        self.refused: BaseException | None = None
        self.retried = False

    def error(self) -> BaseException | None:
        """Why the row is not in the stream, or None when the broker acknowledged it."""
        if self.refused is not None:
            return self.refused
        if self.ack is None or self.ack.cancelled():
            return TimeoutError("no acknowledgement from the broker in time")
        return self.ack.exception()

    def acknowledged(self) -> str:
        assert self.ack is not None
        outcome = "duplicate" if self.ack.result().duplicate else "published"
        if self.span is not None:
            self.span.set_attribute("agora.outcome", outcome)
            self.span.end()
        return outcome

    def failed(self, error: BaseException) -> None:
        if self.span is not None:
            self.span.record_exception(error)
            self.span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            self.span.end()

    def abandon(self) -> None:
        """The round ended (cancelled) before this row's answer was read."""
        if self.ack is not None and not self.ack.done():
            self.ack.cancel()
        if self.span is not None and self.span.is_recording():
            self.span.end()
