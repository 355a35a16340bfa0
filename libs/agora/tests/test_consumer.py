"""Consumers against a real nats-server of this module's own: every event applied exactly once,
through redeliveries, a crash between commit and ack, two replicas, a poison message, a broker
restart; and the `agora events` commands that list and replay dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, DeliverPolicy
from nats.js.errors import NotFoundError
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY
from pydantic import BaseModel
from sqlalchemy import (
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
    text,
)
from typer.testing import CliRunner

from agora.db import UnitOfWork, on_commit
from agora.messaging import schema
from agora.messaging.broker import Broker
from agora.messaging.consumer import DEAD_LETTER_SLACK, Consumers, apply
from agora.messaging.deadletters import DeadLetter, dead_letters
from agora.messaging.envelope import CloudEvent, stream_name
from agora.messaging.outbox import record
from agora.messaging.subscriptions import Handler, Subscription
from agora_tools.cli import app
from agora_tools.runner import Layout, RunnerLock
from agora_tools.testing import (
    NatsServer,
    commits_of,
    connected,
    eventually,
    free_port,
    quick_consumers,
)

# Each test takes seconds; a hang should fail fast, not after the suite's five minutes.
pytestmark = pytest.mark.timeout(60)

PUBLISHER = "ledger"
SUBJECT = "agora.ledger.events.Noted.v1"


class Noted(BaseModel):
    type: ClassVar[str] = "ledger.Noted.v1"
    note: str


# -- a broker of this module's own ------------------------------------------------------------


@pytest.fixture
async def broker(nats_server: NatsServer) -> AsyncIterator[Broker]:
    """Connected, with no ledger stream yet: as if the publisher had never run."""
    broker = await connected(Broker(nats_server.url, name="test", connect_timeout=1.0))
    with contextlib.suppress(NotFoundError):
        await broker.js.delete_stream(stream_name(PUBLISHER))
    yield broker
    await broker.close()


# -- the consuming service's database ---------------------------------------------------------

effects = MetaData()
applied = Table(
    "applied",
    effects,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),
    Column("note", String(100), nullable=False),
    Column("instance", String(20), nullable=False),
)


def create_tables(connection: Connection) -> None:
    schema.metadata.create_all(connection)
    effects.create_all(connection)


@pytest.fixture
async def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'consumer.db'}"
    uow = UnitOfWork(url)
    await uow.run(create_tables)
    await uow.dispose()
    return url


@pytest.fixture
async def uow(database: str) -> AsyncIterator[UnitOfWork]:
    uow = UnitOfWork(database)
    yield uow
    await uow.dispose()


def applications(connection: Connection) -> dict[str, int]:
    """How many times each event's effect was applied."""
    rows = connection.execute(select(applied.c.event_id, func.count()).group_by(applied.c.event_id))
    return {event_id: count for event_id, count in rows}


def instances(connection: Connection) -> dict[str, int]:
    rows = connection.execute(select(applied.c.instance, func.count()).group_by(applied.c.instance))
    return {instance: count for instance, count in rows}


def never(_event: Noted) -> bool:
    return False


def recorder(instance: str = "a", *, fails: Callable[[Noted], bool] = never) -> Handler:
    """A handler that records each application (one row per call), failing when told."""

    def note_applied(connection: Connection, event: Noted, envelope: CloudEvent) -> None:
        if fails(event):
            raise RuntimeError(f"cannot apply {event.note}")
        connection.execute(
            insert(applied).values(event_id=envelope.id, note=event.note, instance=instance)
        )

    return note_applied


# -- helpers ----------------------------------------------------------------------------------


@pytest.fixture
def service() -> str:
    """A consuming service of the test's own, so durables and counters start from nothing."""
    return f"svc{uuid.uuid4().hex[:10]}"


def noting(
    service: str, uow: UnitOfWork, broker: Broker, handler: Handler | None = None, **options: Any
) -> Consumers:
    """The service's consumer of Noted, whose handler records each application unless another
    is given, quick to redeliver (``options`` over quick_consumers' settings and this
    backoff)."""
    subscriptions = [Subscription(Noted, handler or recorder())]
    return quick_consumers(
        service, uow, broker, subscriptions, **({"backoff": [0.05, 0.1]} | options)
    )


@contextlib.asynccontextmanager
async def running(*consumers: Consumers) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    try:
        yield
        for task in tasks:
            assert not task.done(), f"a consumer stopped: {task.exception()!r}"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def publish(
    broker: Broker,
    note: str,
    *,
    event: CloudEvent | None = None,
    msg_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> CloudEvent:
    event = event or CloudEvent(source=PUBLISHER, type=Noted.type, data={"note": note})
    await broker.ensure_stream(PUBLISHER)
    await broker.js.publish(
        SUBJECT,
        event.to_bytes(),
        headers={"Nats-Msg-Id": msg_id or event.id, **(headers or {})},
    )
    return event


def consumed(service: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "agora_events_consumed_total",
        {"service": service, "consumer": f"{service}__note_applied", "outcome": outcome},
    )
    return float(value or 0.0)


def settled(service: str) -> tuple[float, float, float]:
    """How many deliveries the consumer counted failed, dead-lettered and handled."""
    return consumed(service, "failed"), consumed(service, "dead"), consumed(service, "handled")


async def count_applied(uow: UnitOfWork) -> dict[str, int]:
    return await uow.query(applications)


def recorded_spans() -> tuple[InMemorySpanExporter, TracerProvider]:
    """A tracer provider of the test's own, and what keeps the spans it finishes."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return spans, provider


async def applied_once(uow: UnitOfWork, events: Iterable[CloudEvent], what: str) -> None:
    """Wait until each of ``events``, and no other, has been applied exactly once; fail saying
    ``what`` did not happen."""
    expected = {event.id: 1 for event in events}

    async def all_once() -> bool:
        return await count_applied(uow) == expected

    await eventually(all_once, what)


def cli(*args: str) -> Awaitable[Any]:
    """Run `agora ...` off the event loop (the command runs one of its own)."""
    return asyncio.to_thread(CliRunner().invoke, app, list(args))


async def listed_dead(broker: Broker) -> list[DeadLetter]:
    return await dead_letters(broker.js)


# -- settings ---------------------------------------------------------------------------------


def test_redelivery_waits_as_long_as_the_backoff_says_for_that_delivery_and_the_last_repeats() -> (
    None
):
    consumers = Consumers(
        "svc",
        UnitOfWork("sqlite://"),
        Broker("nats://127.0.0.1:1", name="unused"),
        [],
        ack_wait=1,
        max_deliver=5,
        backoff=[0.5, 2, 5],
    )
    assert [consumers.redelivery_delay(n) for n in (1, 2, 3, 4, 9)] == [0.5, 2, 5, 5, 5]


# -- the inbox --------------------------------------------------------------------------------


async def test_the_inbox_lets_each_event_through_once_per_consumer(database_url: str) -> None:
    uow = UnitOfWork(database_url)
    try:
        await uow.run(create_tables)
        envelope = CloudEvent(source=PUBLISHER, type=Noted.type, data={"note": "once"})
        subscription = Subscription(Noted, recorder())
        event = Noted(note="once")
        firsts = [
            await uow.run(apply, "svc__note_applied", envelope.id, subscription, event, envelope)
            for _ in range(2)
        ]
        other = await uow.run(
            apply, "other__note_applied", envelope.id, subscription, event, envelope
        )
        assert firsts == [True, False]
        assert other is True
        # One application for each consumer, none for the repeat.
        assert await count_applied(uow) == {envelope.id: 2}
    finally:
        await uow.dispose()


# -- exactly once -----------------------------------------------------------------------------


async def test_a_consumer_starts_before_its_publisher_ever_ran_as_one_durable_for_the_service(
    broker: Broker, uow: UnitOfWork, service: str
) -> None:
    async with running(noting(service, uow, broker, ack_wait=7.0)):

        async def durable_exists() -> bool:
            try:
                await broker.js.consumer_info(stream_name(PUBLISHER), f"{service}__note_applied")
            except NotFoundError:
                return False
            return True

        await eventually(durable_exists, "the durable consumer was never made")
        info = await broker.js.consumer_info(stream_name(PUBLISHER), f"{service}__note_applied")
        event = await publish(broker, "first")
        await applied_once(uow, [event], "the event was not applied")
    assert info.config.durable_name == f"{service}__note_applied"
    assert info.config.filter_subject == SUBJECT
    assert info.config.ack_policy == AckPolicy.EXPLICIT
    assert info.config.deliver_policy == DeliverPolicy.ALL
    assert info.config.ack_wait == 7.0
    assert info.config.max_deliver == 3 + DEAD_LETTER_SLACK


async def test_each_event_is_applied_once_even_when_the_broker_delivers_it_twice(
    broker: Broker, uow: UnitOfWork, service: str
) -> None:
    events = [await publish(broker, f"note {n}") for n in range(20)]
    # The same event again under another message id: the broker takes it as a new message.
    await publish(broker, "", event=events[0], msg_id=f"{events[0].id}:again")
    async with running(noting(service, uow, broker)):

        async def all_seen() -> bool:
            return consumed(service, "handled") + consumed(service, "duplicate") >= 21

        await eventually(all_seen, "not every message was taken")
    assert await count_applied(uow) == {event.id: 1 for event in events}
    assert consumed(service, "handled") == 20
    assert consumed(service, "duplicate") == 1


async def test_a_consumer_that_dies_between_its_commit_and_its_ack_skips_the_redelivery(
    broker: Broker, uow: UnitOfWork, service: str
) -> None:
    deliveries: list[int] = []

    async def crash_once(msg: Msg) -> None:
        deliveries.append(msg.metadata.num_delivered)
        if len(deliveries) == 1:
            raise RuntimeError("the process dies here, before the ack")

    event = await publish(broker, "crash")
    async with running(noting(service, uow, broker, after_commit=crash_once, ack_wait=1.0)):

        async def redelivered_and_skipped() -> bool:
            return consumed(service, "duplicate") >= 1

        await eventually(redelivered_and_skipped, "the unacked message never came back")
    assert await count_applied(uow) == {event.id: 1}
    assert deliveries == [1, 2]
    # The first delivery never got to its ack, so it was never counted as handled: the only
    # settled outcome is the skipped redelivery.
    assert consumed(service, "handled") == 0


async def test_two_replicas_of_a_service_share_its_durable_and_apply_each_event_once(
    broker: Broker, database: str, service: str
) -> None:
    first, second = UnitOfWork(database), UnitOfWork(database)
    replicas = [
        noting(service, uow, broker, recorder(name), batch=10)
        for uow, name in ((first, "first"), (second, "second"))
    ]
    try:
        async with running(*replicas):
            events = [await publish(broker, f"note {n}") for n in range(500)]

            async def all_applied() -> bool:
                return len(await count_applied(first)) == 500

            await eventually(all_applied, "not every event was applied")
        assert await count_applied(first) == {event.id: 1 for event in events}
        by_instance = await first.query(instances)
        assert set(by_instance) == {"first", "second"}, by_instance
        assert sum(by_instance.values()) == 500
    finally:
        await first.dispose()
        await second.dispose()


# -- a fetch's messages in one transaction ----------------------------------------------------


async def test_the_messages_of_one_fetch_are_applied_in_one_transaction(
    broker: Broker, uow: UnitOfWork, database: str, service: str
) -> None:
    events = [await publish(broker, f"note {n}") for n in range(30)]
    with commits_of(database) as commits:
        async with running(noting(service, uow, broker, batch=10)):
            await applied_once(uow, events, "the events were not applied")

            async def all_acked() -> bool:
                return consumed(service, "handled") == 30

            await eventually(all_acked, "not every event was acked")
    # 30 waiting messages come in fetches of 10 at most: far fewer commits than messages.
    assert 3 <= len(commits) < 30, commits


async def test_a_handler_failing_inside_a_batch_fails_its_message_alone(
    broker: Broker, uow: UnitOfWork, service: str
) -> None:
    calls: list[str] = []

    def once_failing(event: Noted) -> bool:
        calls.append(event.note)
        return event.note == "note 4" and calls.count("note 4") == 1

    events = [await publish(broker, f"note {n}") for n in range(10)]
    async with running(noting(service, uow, broker, recorder(fails=once_failing), batch=10)):
        await applied_once(uow, events, "the events were not all applied")

        async def settled() -> bool:
            return consumed(service, "handled") == 10

        await eventually(settled, "not every event was acked")
    # The failing message was tried once a delivery: it failed, was redelivered, and applied.
    assert calls.count("note 4") == 2
    assert consumed(service, "failed") == 1
    # Those behind it were applied once, in a transaction the failure did not touch.
    assert all(calls.count(f"note {n}") == 1 for n in range(5, 10)), calls
    assert consumed(service, "duplicate") == 0


async def test_a_database_error_in_a_batch_applies_each_message_alone(
    broker: Broker, uow: UnitOfWork, service: str
) -> None:
    record_note = recorder()

    # Named as the recorder's handler, so that the counters read are this consumer's.
    def note_applied(connection: Connection, event: Noted, envelope: CloudEvent) -> None:
        if event.note == "broken":
            connection.execute(text("INSERT INTO no_such_table VALUES (1)"))
        record_note(connection, event, envelope)

    broken = await publish(broker, "broken")
    events = [await publish(broker, f"note {n}") for n in range(5)]
    async with running(noting(service, uow, broker, note_applied, batch=10, ack_wait=30.0)):

        async def dead_lettered() -> bool:
            return any(letter.id == broken.id for letter in await listed_dead(broker))

        await eventually(dead_lettered, "the broken event never reached the dead letters")
        await applied_once(uow, events, "the events beside the broken one were not applied")
    (letter,) = [letter for letter in await listed_dead(broker) if letter.id == broken.id]
    assert "no such table: no_such_table" in letter.error
    assert settled(service) == (2, 1, 5)


async def test_events_recorded_by_a_batch_carry_the_trace_of_their_own_message(
    broker: Broker, uow: UnitOfWork, service: str
) -> None:
    spans, provider = recorded_spans()
    tracer = provider.get_tracer("test")

    def note_and_record(connection: Connection, event: Noted, envelope: CloudEvent) -> None:
        record(connection, Noted(note=f"after {event.note}"), aggregate=envelope.id)

    recordings = {}
    for n in range(5):
        with tracer.start_as_current_span(f"place {n}") as recording:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
        event = await publish(broker, f"note {n}", headers=carrier)
        recordings[event.id] = recording.get_span_context()
    consumers = noting(service, uow, broker, note_and_record, tracer_provider=provider)
    async with running(consumers):

        async def all_recorded() -> bool:
            return len(await uow.query(outbox_rows)) == 5

        await eventually(all_recorded, "not every handler recorded its event")
    processed = {
        span.attributes["messaging.message.id"]: span
        for span in spans.get_finished_spans()
        if span.name == f"{SUBJECT} process" and span.attributes is not None
    }
    assert set(processed) == set(recordings)
    for aggregate, traceparent in await uow.query(outbox_rows):
        span = processed[aggregate]
        # Each process span is its own message's recording's child ...
        assert span.parent is not None
        assert span.parent.span_id == recordings[aggregate].span_id
        # ... and the event its handler recorded continues that span, not another message's.
        context = span.context
        assert traceparent.split("-")[1:3] == [
            f"{context.trace_id:032x}",
            f"{context.span_id:016x}",
        ]


async def test_what_a_batch_asks_for_after_its_commit_runs_under_its_own_message_span(
    broker: Broker, uow: UnitOfWork, service: str
) -> None:
    spans, provider = recorded_spans()
    # The current span's id when each event's after-commit callback ran, by event id.
    called: dict[str, int] = {}

    def note_then_hand_over(connection: Connection, event: Noted, envelope: CloudEvent) -> None:
        def hand_over() -> None:
            called[envelope.id] = trace.get_current_span().get_span_context().span_id

        on_commit(connection, hand_over)

    events = [await publish(broker, f"note {n}") for n in range(5)]
    consumers = noting(service, uow, broker, note_then_hand_over, tracer_provider=provider)
    async with running(consumers):

        async def all_called() -> bool:
            return len(called) == 5

        await eventually(all_called, "not every callback ran")
    processed = {
        span.attributes["messaging.message.id"]: span.context.span_id
        for span in spans.get_finished_spans()
        if span.name == f"{SUBJECT} process" and span.attributes is not None
    }
    assert called == {event.id: processed[event.id] for event in events}


def outbox_rows(connection: Connection) -> list[tuple[str, str]]:
    rows = connection.execute(select(schema.outbox.c.aggregate, schema.outbox.c.traceparent))
    return [(aggregate, traceparent) for aggregate, traceparent in rows]


# -- poison and dead letters ------------------------------------------------------------------


@dataclass
class Flaky:
    """Fails on the note ``poison`` until fixed."""

    fixed: bool = False
    attempts: list[str] = field(default_factory=list)

    def __call__(self, event: Noted) -> bool:
        self.attempts.append(event.note)
        return event.note == "poison" and not self.fixed


async def test_a_failing_event_goes_to_the_dead_letters_the_rest_flow_and_replay_applies_it(
    broker: Broker, uow: UnitOfWork, nats_server: NatsServer, service: str
) -> None:
    flaky = Flaky()
    async with running(noting(service, uow, broker, recorder(fails=flaky))):
        poison = await publish(broker, "poison")
        behind = [await publish(broker, f"note {n}") for n in range(50)]

        async def dead_lettered() -> bool:
            return any(letter.id == poison.id for letter in await listed_dead(broker))

        await eventually(dead_lettered, "the failing event never reached the dead letters")
        await applied_once(uow, behind, "the events behind the failing one did not all flow")
        assert flaky.attempts.count("poison") == 3

        result = await cli("events", "dead", "--nats-url", nats_server.url, "--json")
        assert result.exit_code == 0, result.output
        (listed,) = [entry for entry in json.loads(result.stdout) if entry["id"] == poison.id]
        assert listed["service"] == service
        assert listed["consumer"] == f"{service}__note_applied"
        assert listed["handler"].endswith("recorder.<locals>.note_applied")
        assert listed["error"] == "RuntimeError: cannot apply poison"
        assert listed["delivered"] == 3
        assert listed["original_subject"] == SUBJECT
        assert listed["time"]

        flaky.fixed = True
        result = await cli("events", "replay", poison.id, "--nats-url", nats_server.url)
        assert result.exit_code == 0, result.output
        said = " ".join(result.stdout.split())  # the console wraps long lines
        assert f"Replayed event {poison.id} to {SUBJECT}" in said

        await applied_once(uow, [poison, *behind], "the replayed event was not applied")
        result = await cli("events", "dead", "--nats-url", nats_server.url, "--json")
    assert poison.id not in [entry["id"] for entry in json.loads(result.stdout)]
    assert settled(service) == (2, 1, 51)


async def test_a_message_that_is_no_valid_event_is_dead_lettered_at_once_and_the_rest_flow(
    broker: Broker, uow: UnitOfWork, service: str
) -> None:
    await broker.ensure_stream(PUBLISHER)
    await broker.js.publish(SUBJECT, b"not json", headers={"Nats-Msg-Id": "garbage-1"})
    wrong = CloudEvent(source=PUBLISHER, type=Noted.type, data={"text": "no note field"})
    await publish(broker, "", event=wrong)
    good = [await publish(broker, f"note {n}") for n in range(5)]
    async with running(noting(service, uow, broker)):

        async def both_dead() -> bool:
            ids = {letter.id for letter in await listed_dead(broker)}
            return {"garbage-1", wrong.id} <= ids

        await eventually(both_dead, "the bad messages were not dead-lettered")
        await applied_once(uow, good, "the good events were not applied")
    letters = {letter.id: letter for letter in await listed_dead(broker)}
    assert letters["garbage-1"].delivered == 1
    assert letters["garbage-1"].payload == b"not json"
    assert "not a valid ledger.Noted.v1 event" in letters["garbage-1"].error
    assert letters[wrong.id].delivered == 1
    assert "note" in letters[wrong.id].error
    assert consumed(service, "dead") == 2


async def test_replaying_an_unknown_dead_letter_says_so_and_exits_1(
    nats_server: NatsServer,
) -> None:
    result = await cli("events", "replay", "no-such-event", "--nats-url", nats_server.url)
    assert result.exit_code == 1
    assert "no dead letter has the id 'no-such-event'" in " ".join(result.output.split())


async def test_the_events_commands_need_a_broker_and_say_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AGORA_NATS_URL", raising=False)
    result = await cli("events", "dead")
    assert result.exit_code == 1
    assert "neither --nats-url nor AGORA_NATS_URL is set" in " ".join(result.output.split())

    unreachable = f"nats://127.0.0.1:{free_port()}"
    result = await cli("events", "dead", "--nats-url", unreachable)
    assert result.exit_code == 1
    assert f"cannot reach the broker at {unreachable}" in " ".join(result.output.split())


async def test_the_events_commands_find_the_broker_of_the_system_running_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broker: Broker, nats_server: NatsServer
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AGORA_NATS_URL", raising=False)
    layout = Layout.of(tmp_path)
    lock = RunnerLock(layout)
    assert lock.acquire()
    try:
        layout.state_file.write_text(
            json.dumps({"runner_pid": 1, "started_at": 0.0, "nats_url": nats_server.url})
        )
        result = await cli("events", "dead", "--json")
    finally:
        lock.release()
    assert result.exit_code == 0, result.output
    assert isinstance(json.loads(result.stdout), list)


# -- lag ---------------------------------------------------------------------------------------


def lag(service: str) -> tuple[float | None, float | None]:
    """The consumer's gauges: (pending, ack pending); None before the first reading."""
    labels = {"service": service, "consumer": f"{service}__note_applied"}
    return (
        REGISTRY.get_sample_value("agora_consumer_pending_messages", labels),
        REGISTRY.get_sample_value("agora_consumer_ack_pending_messages", labels),
    )


async def test_the_lag_gauges_say_what_waits_in_the_stream_and_what_waits_for_its_ack(
    broker: Broker, uow: UnitOfWork, service: str
) -> None:
    gate = asyncio.Event()

    async def never_acked(_msg: Msg) -> None:
        # Every message is applied and then dies before its ack: it stays ack pending for the
        # whole ack wait; the first waits for the test to have read the lag before it.
        await gate.wait()
        raise RuntimeError("the process dies here, before the ack")

    for n in range(4):
        await publish(broker, f"note {n}")
    consumers = noting(
        service, uow, broker, after_commit=never_acked, ack_wait=30.0, batch=1, lag_interval=0.05
    )
    async with running(consumers):

        async def all_waiting_in_the_stream() -> bool:
            return lag(service) == (4, 0)

        await eventually(all_waiting_in_the_stream, "the gauges never said 4 messages wait")
        gate.set()

        async def all_delivered_none_acked() -> bool:
            return lag(service) == (0, 4)

        await eventually(all_delivered_none_acked, "the gauges never said 4 wait for their ack")


def stream_figures() -> tuple[float | None, float | None]:
    """The ledger stream's gauges: (messages, bytes); None before the first reading."""
    labels = {"stream": stream_name(PUBLISHER)}
    return (
        REGISTRY.get_sample_value("agora_stream_messages", labels),
        REGISTRY.get_sample_value("agora_stream_bytes", labels),
    )


async def held_by_the_stream(broker: Broker) -> tuple[float, float]:
    state = (await broker.js.stream_info(stream_name(PUBLISHER))).state
    return float(state.messages), float(state.bytes)


async def test_the_stream_gauges_say_what_the_stream_it_reads_from_holds(
    broker: Broker, uow: UnitOfWork, service: str
) -> None:
    for n in range(3):
        await publish(broker, f"note {n}")
    three = await held_by_the_stream(broker)
    assert three[0] == 3

    async with running(noting(service, uow, broker, lag_interval=0.05)):

        async def says(figures: tuple[float, float]) -> bool:
            return stream_figures() == figures

        await eventually(lambda: says(three), "the gauges never said the 3 messages held")
        # Consumed or not, a message stays in the stream until its limits drop it.
        for n in range(2):
            await publish(broker, f"more {n}")
        five = await held_by_the_stream(broker)
        assert five[0] == 5
        assert five[1] > three[1]
        await eventually(lambda: says(five), "the gauges never said the 5 messages held")


# -- broker restarts and trace context --------------------------------------------------------


async def test_consumers_carry_on_after_the_broker_restarts(
    broker: Broker, uow: UnitOfWork, nats_server: NatsServer, service: str
) -> None:
    async with running(noting(service, uow, broker)):
        before = [await publish(broker, f"before {n}") for n in range(10)]
        await applied_once(uow, before, "the events before the restart were not applied")
        await asyncio.to_thread(nats_server.stop)
        await asyncio.to_thread(nats_server.start)

        async def reconnected() -> bool:
            return broker.connected

        await eventually(reconnected, "the broker connection did not come back")
        after = [await publish(broker, f"after {n}") for n in range(10)]
        await applied_once(uow, [*before, *after], "the events after the restart were not applied")


async def test_the_consumer_span_is_a_child_of_the_span_that_recorded_the_event(
    broker: Broker, uow: UnitOfWork, service: str
) -> None:
    spans, provider = recorded_spans()
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("place order") as recording:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    event = await publish(broker, "traced", headers=carrier)
    async with running(noting(service, uow, broker, tracer_provider=provider)):
        await applied_once(uow, [event], "the event was not applied")
    (span,) = [s for s in spans.get_finished_spans() if s.name == f"{SUBJECT} process"]
    assert span.kind == SpanKind.CONSUMER
    assert span.parent is not None
    assert span.parent.span_id == recording.get_span_context().span_id
    assert span.context.trace_id == recording.get_span_context().trace_id
    assert span.attributes is not None
    assert span.attributes["messaging.message.id"] == event.id
