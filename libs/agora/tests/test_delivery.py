"""Every committed event reaches its handler's effect exactly once, through a real NATS, when
(a) the relay dies after the publish and before marking the row sent, (c) the broker is away for
ten seconds while a thousand events are committed, and (d) two relays and two consumers run at
once. (The consumer dying after its commit and before its ack is in test_consumer.py.)

Each test runs a nats-server of its own on a free port; the shared one is never touched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import Connection, MetaData, func, insert, select

from agora.db import UnitOfWork
from agora.messaging.broker import Broker
from agora.messaging.consumer import Consumers
from agora.messaging.envelope import CloudEvent, stream_name
from agora.messaging.outbox import record
from agora.messaging.relay import Relay, backlog
from agora.messaging.schema import metadata as messaging_metadata
from agora.messaging.subscriptions import Subscription
from agora.tasks import cancel_and_wait
from agora_tools.testing import NatsServer, Noted, effects, effects_metadata

# Each test bounds its own waits (at most 90 s for the broker-away one); this only stops a hang.
pytestmark = pytest.mark.timeout(240)


def apply_noted(connection: Connection, event: Noted, envelope: CloudEvent) -> None:
    # Deliberately not idempotent by itself: a second application would add a second row.
    connection.execute(insert(effects).values(event_id=envelope.id, n=event.n))


SUBSCRIPTIONS = (Subscription(Noted, apply_noted),)


def note(connection: Connection, n: int, aggregates: int) -> None:
    record(connection, Noted(n=n), aggregate=f"account-{n % aggregates}")


def applied(connection: Connection) -> tuple[int, int]:
    """(rows, distinct event ids) of the effect."""
    rows = connection.execute(select(func.count()).select_from(effects)).scalar_one()
    distinct = connection.execute(
        select(func.count(func.distinct(effects.c.event_id)))
    ).scalar_one()
    return int(rows), int(distinct)


def create_all(connection: Connection, schema: MetaData) -> None:
    schema.create_all(connection)


async def make_uow(path: Path, source: str, *extra: MetaData) -> UnitOfWork:
    uow = UnitOfWork(f"sqlite:///{path}", source=source)
    for schema in (messaging_metadata, *extra):
        await uow.run(create_all, schema)
    return uow


class Line:
    """A publisher (ledger) and a subscriber (audit), each with its own database."""

    def __init__(self, nats: NatsServer, publisher: UnitOfWork, subscriber: UnitOfWork) -> None:
        self.nats = nats
        self.publisher = publisher
        self.subscriber = subscriber
        self.tasks: list[asyncio.Task[None]] = []
        self.brokers: list[Broker] = []
        self.unsubscribe: dict[str, Callable[[], None]] = {}

    async def broker(self, name: str) -> Broker:
        broker = Broker(self.nats.url, name=name)
        broker.on_connect(lambda: broker.ensure_stream("ledger"))
        await broker.start()
        self.brokers.append(broker)
        return broker

    async def relay(
        self, name: str, after_publish: Callable[[Sequence[int]], Awaitable[None]] | None = None
    ) -> Relay:
        relay = Relay(
            self.publisher,
            await self.broker(name),
            service="ledger",
            idle_poll=0.2,
            after_publish=after_publish,
        )
        self.unsubscribe[name] = self.publisher.after_commit(relay.wake)
        self.tasks.append(asyncio.create_task(relay.run()))
        return relay

    async def consumer(self, name: str) -> None:
        consumers = Consumers(
            "audit",
            self.subscriber,
            await self.broker(name),
            SUBSCRIPTIONS,
            ack_wait=2.0,
            max_deliver=10,
            backoff=[0.1],
        )
        self.tasks.append(asyncio.create_task(consumers.run()))

    async def commit(self, count: int, *, start: int = 0, aggregates: int = 20) -> None:
        for n in range(start, start + count):
            await self.publisher.run(note, n, aggregates)

    async def wait_applied(self, count: int, within: float = 60) -> tuple[int, int]:
        deadline = time.monotonic() + within
        while True:
            seen = await self.subscriber.query(applied)
            if seen[0] >= count or time.monotonic() > deadline:
                return seen
            await asyncio.sleep(0.05)

    async def settle(self) -> tuple[int, int]:
        """What stands once any redelivery would have come (past the consumers' ack wait)."""
        await asyncio.sleep(2.5)
        return await self.subscriber.query(applied)

    async def stream_messages(self) -> int:
        info = await self.brokers[0].js.stream_info(stream_name("ledger"))
        return int(info.state.messages)

    async def close(self) -> None:
        await cancel_and_wait(self.tasks)
        for broker in self.brokers:
            await broker.close()


@pytest.fixture
async def line(tmp_path: Path) -> AsyncIterator[Line]:
    nats = NatsServer(tmp_path / "nats").start()
    publisher = await make_uow(tmp_path / "ledger.db", "ledger")
    subscriber = await make_uow(tmp_path / "audit.db", "audit", effects_metadata)
    running = Line(nats, publisher, subscriber)
    try:
        yield running
    finally:
        await running.close()
        await publisher.dispose()
        await subscriber.dispose()
        nats.kill()


class RelayDied(BaseException):
    """The relay's process ending abruptly (not an error it could catch and retry)."""


async def test_a_relay_dying_between_the_ack_and_the_mark_loses_and_doubles_nothing(
    line: Line,
) -> None:
    died = asyncio.Event()

    async def die_once(_: Sequence[int]) -> None:
        if not died.is_set():
            died.set()
            raise RelayDied

    await line.consumer("audit-1")
    await line.relay("ledger-1", after_publish=die_once)
    await line.commit(200)
    await asyncio.wait_for(died.wait(), 10)
    await asyncio.gather(*line.tasks[-1:], return_exceptions=True)  # the dead relay's task
    assert await line.publisher.query(backlog) > 0, "the rows it published are still pending"
    line.unsubscribe["ledger-1"]()  # the dead relay hears of no more commits

    await line.relay("ledger-2")  # the restarted process's relay publishes them again

    assert await line.wait_applied(200) == (200, 200)
    assert await line.settle() == (200, 200)
    assert await line.publisher.query(backlog) == 0
    # The second publishes of the same rows were dropped by the stream's de-duplication.
    assert await line.stream_messages() == 200


async def test_a_broker_away_for_ten_seconds_while_a_thousand_events_commit(line: Line) -> None:
    await line.consumer("audit-1")
    await line.relay("ledger-1")
    await line.commit(100)
    assert await line.wait_applied(100) == (100, 100)

    line.nats.stop()
    stopped = time.monotonic()
    # The service goes on committing while the broker is away: the outbox holds the events.
    for second in range(10):
        await line.commit(100, start=100 + second * 100)
        await asyncio.sleep(max(0.0, stopped + second + 1 - time.monotonic()))
    assert await line.publisher.query(backlog) >= 1000 - 100
    line.nats.start()

    assert await line.wait_applied(1100, within=90) == (1100, 1100)
    assert await line.settle() == (1100, 1100)
    assert await line.publisher.query(backlog) == 0


async def test_two_relays_and_two_consumers_at_once_apply_every_event_once(line: Line) -> None:
    await line.consumer("audit-1")
    await line.consumer("audit-2")
    await line.relay("ledger-1")
    await line.relay("ledger-2")

    await asyncio.gather(line.commit(300, start=0), line.commit(300, start=300))

    assert await line.wait_applied(600) == (600, 600)
    assert await line.settle() == (600, 600)
    assert await line.stream_messages() == 600


async def test_the_consumers_span_is_a_child_of_the_span_that_recorded_the_event(
    line: Line, finished_spans: InMemorySpanExporter
) -> None:
    await line.consumer("audit-1")
    await line.relay("ledger-1")
    tracer = trace.get_tracer("test")

    with tracer.start_as_current_span("place an order") as recording:
        await line.commit(1)
    assert await line.wait_applied(1) == (1, 1)

    def finished() -> list[ReadableSpan]:
        return [s for s in finished_spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]

    deadline = time.monotonic() + 10
    while True:  # the consumer's span ends just after the effect commits
        if finished() or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    (consumed,) = finished()
    by_id = {
        s.context.span_id: s for s in finished_spans.get_finished_spans() if s.context is not None
    }
    # Walk up from the consumer's span: through the relay's publish, to the recording span.
    chain = []
    current: ReadableSpan | None = consumed
    while current is not None and current.parent is not None:
        chain.append(current.name)
        current = by_id.get(current.parent.span_id)
    recorded = recording.get_span_context()
    assert consumed.context is not None
    assert consumed.context.trace_id == recorded.trace_id
    assert current is not None
    assert current.context is not None
    assert current.context.span_id == recorded.span_id
    assert any(name.endswith("publish") for name in chain), chain
