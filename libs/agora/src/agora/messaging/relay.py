"""The relay: publishes the outbox to JetStream, and marks a row sent only once the broker has
acknowledged it.

* It wakes at once when a commit wrote events (the unit of work calls :meth:`Relay.wake`), and
  otherwise looks every ``idle_poll`` seconds, for rows another replica's commit wrote or a wake
  that came while it was busy.
* Rows are claimed by ``status = 'pending'`` in ``seq`` order, never by a high-water mark. Each
  aggregate's rows go out one after another, each awaiting its ack before the next (so per
  aggregate the order holds even when a publish fails half-way); different aggregates go out
  concurrently.
* Every publish carries ``Nats-Msg-Id`` = the event id: a row published twice (a relay that died
  between the ack and the mark, or two replicas' relays taking the same row) is dropped by the
  stream's de-duplication window.
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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby

import structlog
from nats.js import JetStreamContext
from nats.js.errors import NoStreamResponseError
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Gauge
from sqlalchemy import func, inspect, select, update
from sqlalchemy.orm import Session

from agora.backoff import Backoff, retrying, warn
from agora.messaging.broker import Broker
from agora.messaging.schema import outbox
from agora.telemetry import SERVICE
from agora.transactions import Transactions

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


def pending_rows(session: Session, limit: int) -> list[Pending]:
    rows = session.execute(
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


def mark_sent(session: Session, seqs: Sequence[int], at: datetime) -> None:
    session.execute(
        update(outbox)
        .where(outbox.c.seq.in_(seqs), outbox.c.status == "pending")
        .values(status="sent", sent_at=at)
    )


def has_outbox(session: Session) -> bool:
    """Whether this service's migrations made an outbox (a service that publishes nothing has
    none, and needs no relay)."""
    return inspect(session.connection()).has_table(outbox.name)


def backlog(session: Session) -> int:
    """How many events wait to be published."""
    return int(
        session.execute(
            select(func.count()).select_from(outbox).where(outbox.c.status == "pending")
        ).scalar_one()
    )


@dataclass(frozen=True, slots=True)
class Look:
    """One look at the outbox: up to a batch of its pending rows, and how many wait in all."""

    rows: list[Pending]
    waiting: int


def look(session: Session, limit: int) -> Look:
    rows = pending_rows(session, limit)
    # Fewer than a batch is all of them: count only when a full batch says more may wait.
    return Look(rows, backlog(session) if len(rows) >= limit else len(rows))


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
        after_publish: Callable[[Sequence[int]], Awaitable[None]] | None = None,
    ) -> None:
        self.uow = uow
        self.broker = broker
        self.service = service
        self.batch = batch
        self.idle_poll = idle_poll
        self.backoff_max = backoff_max
        self.publish_timeout = publish_timeout
        # Runs between the broker's acks and marking the rows sent: a test makes the relay die
        # exactly there.
        self.after_publish = after_publish
        self._wake = asyncio.Event()

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
            await retrying(self._publish_all, backoff, failed=could_not_publish)

    async def _publish_all(self) -> None:
        while await self.publish_pending() >= self.batch:
            pass  # a full batch: there may be more

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
        acked: list[int] = []
        errors: list[BaseException] = []

        async def chain(group: list[Pending]) -> None:
            for row in group:
                try:
                    await self._publish(js, row)
                except Exception as error:
                    errors.append(error)
                    return  # later rows of this aggregate wait for this one
                acked.append(row.seq)

        groups = [
            list(g)
            for _, g in groupby(
                sorted(rows, key=lambda r: (r.aggregate, r.seq)), key=lambda r: r.aggregate
            )
        ]
        await asyncio.gather(*(chain(group) for group in groups))
        if acked:
            if self.after_publish is not None:
                await self.after_publish(acked)
            await self.uow.run(mark_sent, acked, datetime.now(UTC))
        if errors and not acked:
            raise errors[0]
        if errors:
            log.warning("some events not published yet", failed=len(errors), published=len(acked))
        return len(rows)

    async def _publish(self, js: JetStreamContext, row: Pending) -> None:
        parent = propagate.extract({"traceparent": row.traceparent} if row.traceparent else {})
        with tracer.start_as_current_span(
            f"{row.subject} publish", context=parent, kind=SpanKind.PRODUCER
        ) as span:
            span.set_attribute(SERVICE, self.service)
            span.set_attribute("messaging.system", "nats")
            span.set_attribute("messaging.destination.name", row.subject)
            span.set_attribute("messaging.message.id", row.id)
            span.set_attribute("agora.event_type", row.type)
            if row.aggregate:
                # The envelope's subject: the aggregate it is about (an order id finds its
                # checkout).
                span.set_attribute("agora.subject", row.aggregate)
            headers = {"Nats-Msg-Id": row.id}
            propagate.inject(headers)
            try:
                ack = await js.publish(
                    row.subject, row.payload, timeout=self.publish_timeout, headers=headers
                )
            except NoStreamResponseError:
                # No stream takes the subject yet: a command to a service that has never run.
                # Make its stream, as a consumer of it would, and the command waits there.
                await self.broker.find_stream(row.subject.split(".")[1])
                ack = await js.publish(
                    row.subject, row.payload, timeout=self.publish_timeout, headers=headers
                )
            outcome = "duplicate" if ack.duplicate else "published"
            span.set_attribute("agora.outcome", outcome)
        PUBLISHED.labels(self.service, outcome).inc()
