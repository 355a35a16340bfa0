"""The relay's gauges, which the outbox alert reads (ADR 34): how many events wait, and when the
oldest of them was recorded; with nothing waiting, the time of the relay's last look, so that
``time() - oldest`` grows only while the relay cannot publish. And its batches (ADR 51): a row
the broker refuses holds back its own aggregate's later rows and no other aggregate's, and each
message of a batch carries the trace of the commit that recorded it. And its linger (ADR 60): after
a pass of many rows it lets the next batch fill, after a pass of few it does not wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import ClassVar

import pytest
from nats.js.api import StreamConfig
from nats.js.errors import APIError, NotFoundError
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import REGISTRY
from pydantic import BaseModel
from sqlalchemy import Connection

from agora.db import UnitOfWork
from agora.messaging.broker import Broker, BrokerUnavailable
from agora.messaging.envelope import stream_name, stream_subjects
from agora.messaging.outbox import record
from agora.messaging.relay import Relay, pending_rows
from agora.messaging.schema import metadata
from agora_tools.testing import NatsServer, connected, eventually

pytestmark = pytest.mark.timeout(60)

# A service name of these tests' own: the gauges are the process's, labelled by service.
SERVICE = "relay-gauges"


class Noted(BaseModel):
    type: ClassVar[str] = "ledger.Noted.v1"
    n: int
    memo: str = ""


def note(connection: Connection, n: int) -> None:
    record(connection, Noted(n=n), aggregate=f"account-{n}")


def note_about(connection: Connection, n: int, aggregate: str, memo: str = "") -> str:
    return record(connection, Noted(n=n, memo=memo), aggregate=aggregate).id


def pending_ids(connection: Connection) -> list[str]:
    return [row.id for row in pending_rows(connection, 100)]


def create_all(connection: Connection) -> None:
    metadata.create_all(connection)


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"service": SERVICE})


def waiting() -> float | None:
    return gauge("agora_outbox_pending")


def oldest() -> float | None:
    return gauge("agora_outbox_oldest_pending_timestamp_seconds")


@pytest.fixture
async def uow(tmp_path: Path) -> AsyncIterator[UnitOfWork]:
    uow = UnitOfWork(f"sqlite:///{tmp_path / 'ledger.db'}", source="ledger")
    await uow.run(create_all)
    yield uow
    await uow.dispose()


async def test_an_event_a_rolled_back_transaction_recorded_is_never_written(
    uow: UnitOfWork,
) -> None:
    # The connection outlives the transaction in the pool: what the first recorded must not ride
    # along with the next transaction on it.
    def note_then_fail(connection: Connection) -> None:
        note(connection, 1)
        raise LookupError("the handler changed its mind")

    with pytest.raises(LookupError):
        await uow.run(note_then_fail)
    kept = await uow.run(note_about, 2, "account-2")

    assert await uow.query(pending_ids) == [kept]


async def test_the_backlog_gauges_grow_while_the_broker_is_away_and_settle_once_it_is_back(
    uow: UnitOfWork, tmp_path: Path
) -> None:
    nats = NatsServer(tmp_path / "nats")  # not started: the broker is away
    broker = Broker(nats.url, name="ledger")
    broker.on_connect(lambda: broker.ensure_stream("ledger"))
    await broker.start()
    # A batch of two: five waiting events take a count beyond the rows the relay read.
    relay = Relay(uow, broker, service=SERVICE, batch=2)
    try:
        before = time.time()
        for n in range(3):
            await uow.run(note, n)
        with pytest.raises(BrokerUnavailable):
            await relay.publish_pending()
        first_recorded = oldest()
        assert waiting() == 3
        assert first_recorded is not None
        assert before <= first_recorded <= time.time()

        for n in range(3, 5):
            await uow.run(note, n)
        with pytest.raises(BrokerUnavailable):
            await relay.publish_pending()
        assert waiting() == 5
        assert oldest() == first_recorded, "the oldest waiting event is still the first"

        nats.start()
        await connected(broker, within=20)
        while await relay.publish_pending():
            pass  # a full batch: there may be more
        looked = time.time()
        await relay.publish_pending()  # the look that finds nothing waiting

        assert waiting() == 0
        found = oldest()
        assert found is not None
        assert looked <= found <= time.time()
    finally:
        await broker.close()
        nats.kill()


# -- batches ----------------------------------------------------------------------------------

# The stream of these tests refuses a message larger than this; an ordinary event is far smaller.
MAX_MESSAGE = 4096


@pytest.fixture
async def nats(tmp_path: Path) -> AsyncIterator[NatsServer]:
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.kill()


@pytest.fixture
async def broker(nats: NatsServer) -> AsyncIterator[Broker]:
    broker = await connected(Broker(nats.url, name="ledger"))
    yield broker
    await broker.close()


async def make_stream(broker: Broker, max_message: int) -> None:
    config = StreamConfig(
        name=stream_name("ledger"), subjects=stream_subjects("ledger"), max_msg_size=max_message
    )
    try:
        await broker.js.stream_info(stream_name("ledger"))
    except NotFoundError:
        await broker.js.add_stream(config)
    else:
        await broker.js.update_stream(config)


async def stream_messages(broker: Broker) -> list[tuple[str, dict[str, str]]]:
    """(Nats-Msg-Id, headers) of each message in the stream, in the stream's order."""
    info = await broker.js.stream_info(stream_name("ledger"))
    found: list[tuple[str, dict[str, str]]] = []
    if not info.state.messages:
        return found
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        message = await broker.js.get_msg(stream_name("ledger"), seq)
        headers = dict(message.headers or {})
        found.append((headers["Nats-Msg-Id"], headers))
    return found


async def test_a_refused_row_holds_back_its_aggregates_later_rows_but_not_other_aggregates(
    uow: UnitOfWork, broker: Broker
) -> None:
    await make_stream(broker, MAX_MESSAGE)
    marked: list[Sequence[int]] = []

    async def remember(seqs: Sequence[int]) -> None:
        marked.append(list(seqs))

    relay = Relay(uow, broker, service=SERVICE, after_publish=remember, publish_timeout=5)
    a1 = await uow.run(note_about, 1, "account-a")
    a2 = await uow.run(note_about, 2, "account-a", "x" * MAX_MESSAGE)  # the broker refuses it
    a3 = await uow.run(note_about, 3, "account-a")
    b = [await uow.run(note_about, n, "account-b") for n in range(4, 7)]
    c1 = await uow.run(note_about, 7, "account-c")

    assert await relay.publish_pending() == 7

    # Account b's three events went out in their order, each once the one before was in.
    assert [id_ for id_, _ in await stream_messages(broker)] == [a1, b[0], c1, b[1], b[2]]
    # Account a's third waits behind its refused second, unpublished, and so does the second.
    assert await uow.query(pending_ids) == [a2, a3]
    assert len(marked) == 1, "the acknowledged rows are marked at once, after the acks"

    await make_stream(broker, 4 * MAX_MESSAGE)  # the broker takes it now
    assert await relay.publish_pending() == 2

    published = [id_ for id_, _ in await stream_messages(broker)]
    assert published[5:] == [a2, a3]
    assert [id_ for id_ in published if id_ in (a1, a2, a3)] == [a1, a2, a3]
    assert await uow.query(pending_ids) == []


async def test_when_every_row_of_a_batch_is_refused_the_round_fails_and_all_stay_pending(
    uow: UnitOfWork, broker: Broker
) -> None:
    await make_stream(broker, MAX_MESSAGE)
    relay = Relay(uow, broker, service=SERVICE, publish_timeout=5)
    ids = [await uow.run(note_about, n, f"account-{n}", "x" * MAX_MESSAGE) for n in range(3)]

    # nats-py leaves a refused asynchronous publish unanswered (nats.py #985): the relay sees
    # no acknowledgement in time, which a fixed nats-py would report as the broker's refusal.
    with pytest.raises((TimeoutError, APIError)):
        await relay.publish_pending()

    assert await uow.query(pending_ids) == ids
    assert await stream_messages(broker) == []


def trace_of(headers: dict[str, str]) -> SpanContext:
    context = TraceContextTextMapPropagator().extract(headers)
    return trace.get_current_span(context).get_span_context()


async def test_each_message_of_a_batch_carries_the_trace_that_recorded_its_event(
    uow: UnitOfWork, broker: Broker, finished_spans: InMemorySpanExporter
) -> None:
    await make_stream(broker, MAX_MESSAGE)
    relay = Relay(uow, broker, service=SERVICE)
    tracer = trace.get_tracer("test")
    recordings = {}
    for n in range(3):
        with tracer.start_as_current_span(f"request {n}") as span:
            recordings[await uow.run(note_about, n, "account-a")] = span.get_span_context()
    untraced = await uow.run(note_about, 3, "account-b")  # recorded outside any trace

    assert await relay.publish_pending() == 4

    finished = {s.context.span_id: s for s in finished_spans.get_finished_spans() if s.context}
    (batch,) = [s for s in finished.values() if s.name == "outbox publish"]
    messages = dict(await stream_messages(broker))
    for event_id, recorded in recordings.items():
        carried = trace_of(messages[event_id])
        assert carried.trace_id == recorded.trace_id
        # The message's parent is the relay's publish span, a child of the recording span.
        publish = finished[carried.span_id]
        assert publish.kind == SpanKind.PRODUCER
        assert publish.name.endswith(" publish")
        assert publish.parent is not None
        assert publish.parent.span_id == recorded.span_id
        assert publish.attributes is not None
        assert publish.attributes["messaging.message.id"] == event_id
        assert publish.attributes["agora.outcome"] == "published"
    # The batch's span links each trace it published for.
    assert batch.context is not None
    assert {link.context.trace_id for link in batch.links} == {
        recorded.trace_id for recorded in recordings.values()
    }
    # The event recorded outside any trace continues the batch's.
    assert trace_of(messages[untraced]).span_id == batch.context.span_id


# -- linger -----------------------------------------------------------------------------------


async def running_relay(
    uow: UnitOfWork, broker: Broker, *, linger: float, linger_after: int
) -> tuple[asyncio.Task[None], list[list[int]]]:
    """A relay running as a service runs it, woken by every commit; the rows of each of its
    passes, as they are acknowledged."""
    passes: list[list[int]] = []

    async def remember(seqs: Sequence[int]) -> None:
        passes.append(list(seqs))

    relay = Relay(
        uow,
        broker,
        service=SERVICE,
        linger=linger,
        linger_after=linger_after,
        after_publish=remember,
    )
    uow.after_commit(relay.wake)
    return asyncio.create_task(relay.run()), passes


async def test_after_a_pass_of_many_rows_the_commits_made_meanwhile_go_out_in_one_batch(
    uow: UnitOfWork, broker: Broker
) -> None:
    await make_stream(broker, MAX_MESSAGE)
    for n in range(3):
        await uow.run(note_about, n, f"account-{n}")
    # Long enough that the five commits below fall inside it on the slowest machine.
    task, passes = await running_relay(uow, broker, linger=5.0, linger_after=3)
    try:
        await eventually(lambda: _done(passes, 1), "the first pass")
        for n in range(3, 8):  # five commits spread over a tenth of a second, each a wake
            await asyncio.sleep(0.02)  # the relay gets the loop between them
            await uow.run(note_about, n, f"account-{n}")
        await eventually(lambda: _done(passes, 2), "the second pass")

        assert [len(seqs) for seqs in passes] == [3, 5]
        assert await uow.query(pending_ids) == []
    finally:
        task.cancel()


async def test_after_a_pass_of_few_rows_the_next_event_goes_out_without_waiting(
    uow: UnitOfWork, broker: Broker
) -> None:
    await make_stream(broker, MAX_MESSAGE)
    # A linger far longer than the waits below: an event waiting for it would not arrive.
    task, passes = await running_relay(uow, broker, linger=3600, linger_after=2)
    try:
        await uow.run(note_about, 1, "account-a")
        await eventually(lambda: _done(passes, 1), "the first event")
        await uow.run(note_about, 2, "account-a")
        await eventually(lambda: _done(passes, 2), "the second event, without a linger")

        assert [len(seqs) for seqs in passes] == [1, 1]
    finally:
        task.cancel()


async def _done(passes: list[list[int]], count: int) -> bool:
    return len(passes) >= count
