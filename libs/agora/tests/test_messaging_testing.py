"""The messaging test helpers: the in-memory bus applies events as the real consumer does (inbox
and handler in one transaction, a redelivery skipped), on SQLite and PostgreSQL; wait_for_event
and collect_events find what was published on a real NATS (a nats-server of the test's own)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import ClassVar

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from pydantic import BaseModel
from sqlalchemy import Connection, insert, select

from agora.db import UnitOfWork
from agora.messaging.consumer import Poison
from agora.messaging.envelope import CloudEvent, envelope, stream_name, stream_subjects
from agora.messaging.outbox import record
from agora.messaging.relay import backlog
from agora.messaging.schema import inbox
from agora.messaging.schema import metadata as messaging_metadata
from agora.messaging.subscriptions import Subscription
from agora_tools.testing import (
    InMemoryBus,
    NatsServer,
    Noted,
    collect_events,
    effects,
    effects_metadata,
    wait_for_event,
)

pytestmark = pytest.mark.timeout(60)


class Closed(BaseModel):
    type: ClassVar[str] = "ledger.Closed.v1"
    account: str


class Audited(BaseModel):
    type: ClassVar[str] = "audit.Audited.v1"
    n: int


def audit_noted(connection: Connection, event: Noted, envelope: CloudEvent) -> None:
    # Not idempotent by itself: a second application would add a second row.
    connection.execute(insert(effects).values(handler="audit", event_id=envelope.id, n=event.n))


def count_noted(connection: Connection, event: Noted, envelope: CloudEvent) -> None:
    connection.execute(insert(effects).values(handler="count", event_id=envelope.id, n=event.n))


def refuse_noted(connection: Connection, event: Noted, envelope: CloudEvent) -> None:
    connection.execute(insert(effects).values(handler="refuse", event_id=envelope.id, n=event.n))
    raise RuntimeError(f"cannot take note {event.n}")


def audit_and_announce(connection: Connection, event: Noted, envelope: CloudEvent) -> None:
    audit_noted(connection, event, envelope)
    record(connection, Audited(n=event.n), aggregate=envelope.subject or "")


def count_audited(connection: Connection, event: Audited, envelope: CloudEvent) -> None:
    connection.execute(insert(effects).values(handler="report", event_id=envelope.id, n=event.n))


def effect_rows(connection: Connection) -> list[tuple[str, int]]:
    rows = connection.execute(select(effects.c.handler, effects.c.n).order_by(effects.c.id))
    return [(handler, n) for handler, n in rows]


def inbox_rows(connection: Connection) -> list[tuple[str, str]]:
    rows = connection.execute(select(inbox.c.consumer, inbox.c.event_id).order_by(inbox.c.consumer))
    return [(consumer, event_id) for consumer, event_id in rows]


def note(connection: Connection, *numbers: int) -> None:
    for n in numbers:
        record(connection, Noted(n=n), aggregate=f"account-{n % 2}")


async def make_uow(url: str, source: str) -> UnitOfWork:
    uow = UnitOfWork(url, source=source)
    await uow.run(create_tables)
    return uow


def create_tables(connection: Connection) -> None:
    for schema in (messaging_metadata, effects_metadata):
        schema.create_all(connection)


@pytest.fixture
async def audit(database_url: str) -> AsyncIterator[UnitOfWork]:
    uow = await make_uow(database_url, "audit")
    yield uow
    await uow.dispose()


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[UnitOfWork]:
    uow = await make_uow(f"sqlite:///{tmp_path / 'ledger.db'}", "ledger")
    yield uow
    await uow.dispose()


# The in-memory bus


async def test_a_published_event_reaches_its_handler_and_the_inbox(audit: UnitOfWork) -> None:
    bus = InMemoryBus([Subscription(Noted, audit_noted)], audit)

    delivery = await bus.publish(Noted(n=7), aggregate="account-1")

    assert delivery.handled == ("audit__audit_noted",)
    assert delivery.event.type == "ledger.Noted.v1"
    assert delivery.event.source == "ledger"
    assert delivery.event.subject == "account-1"
    assert await audit.query(effect_rows) == [("audit", 7)]
    assert await audit.query(inbox_rows) == [("audit__audit_noted", delivery.event.id)]
    assert bus.published == [delivery.event]


async def test_a_redelivered_event_is_skipped(audit: UnitOfWork) -> None:
    bus = InMemoryBus([Subscription(Noted, audit_noted)], audit)
    first = await bus.publish(Noted(n=7), aggregate="account-1")

    again = await bus.deliver(first.event)

    assert again.handled == ()
    assert again.skipped == ("audit__audit_noted",)
    assert await audit.query(effect_rows) == [("audit", 7)]
    assert bus.published == [first.event]
    assert bus.deliveries == [first, again]


async def test_a_second_event_with_the_same_id_is_skipped(audit: UnitOfWork) -> None:
    bus = InMemoryBus([Subscription(Noted, audit_noted)], audit)

    await bus.publish(Noted(n=1), aggregate="account-1", event_id="same-id")
    second = await bus.publish(Noted(n=2), aggregate="account-1", event_id="same-id")

    assert second.skipped == ("audit__audit_noted",)
    assert await audit.query(effect_rows) == [("audit", 1)]


async def test_an_event_nobody_subscribes_to_is_listed_but_applied_nowhere(
    audit: UnitOfWork,
) -> None:
    bus = InMemoryBus([Subscription(Noted, audit_noted)], audit)

    delivery = await bus.publish(Closed(account="account-1"), aggregate="account-1")

    assert (delivery.handled, delivery.skipped) == ((), ())
    assert [event.type for event in bus.published] == ["ledger.Closed.v1"]
    assert await audit.query(effect_rows) == []


async def test_every_subscription_of_the_type_applies_it_once(audit: UnitOfWork) -> None:
    bus = InMemoryBus([Subscription(Noted, audit_noted), Subscription(Noted, count_noted)], audit)

    first = await bus.publish(Noted(n=3), aggregate="account-1")
    again = await bus.deliver(first.event)

    assert first.handled == ("audit__audit_noted", "audit__count_noted")
    assert again.skipped == ("audit__audit_noted", "audit__count_noted")
    assert await audit.query(effect_rows) == [("audit", 3), ("count", 3)]


async def test_a_failing_handler_leaves_nothing_behind_and_the_event_can_come_again(
    audit: UnitOfWork,
) -> None:
    failing = InMemoryBus([Subscription(Noted, refuse_noted, name="note")], audit)
    with pytest.raises(RuntimeError, match="cannot take note 4"):
        await failing.publish(Noted(n=4), aggregate="account-1", event_id="event-4")
    assert await audit.query(effect_rows) == []
    assert await audit.query(inbox_rows) == []

    # The same consumer, its handler fixed: the event is applied, not skipped.
    fixed = InMemoryBus([Subscription(Noted, audit_noted, name="note")], audit)
    delivery = await fixed.deliver(failing.published[0])

    assert delivery.handled == ("audit__note",)
    assert await audit.query(effect_rows) == [("audit", 4)]


async def test_one_failing_subscription_does_not_keep_the_event_from_the_others(
    audit: UnitOfWork,
) -> None:
    bus = InMemoryBus([Subscription(Noted, refuse_noted), Subscription(Noted, audit_noted)], audit)

    with pytest.raises(RuntimeError, match="cannot take note 5"):
        await bus.publish(Noted(n=5), aggregate="account-1")

    assert await audit.query(effect_rows) == [("audit", 5)]
    assert bus.deliveries[0].handled == ("audit__audit_noted",)


async def test_an_envelope_whose_data_is_not_the_event_is_poison(audit: UnitOfWork) -> None:
    bus = InMemoryBus([Subscription(Noted, audit_noted)], audit)
    wrong = CloudEvent(source="ledger", type="ledger.Noted.v1", data={"n": "not a number"})

    with pytest.raises(Poison, match=r"not a valid ledger\.Noted\.v1 event"):
        await bus.deliver(wrong)

    assert await audit.query(inbox_rows) == []


def test_two_subscriptions_with_one_durable_name_are_refused(tmp_path: Path) -> None:
    uow = UnitOfWork(f"sqlite:///{tmp_path / 'audit.db'}", source="audit")
    with pytest.raises(ValueError, match="share a durable name"):
        InMemoryBus(
            [Subscription(Noted, audit_noted, name="x"), Subscription(Noted, count_noted, "x")],
            uow,
        )


async def test_relay_carries_a_publishers_outbox_to_the_handlers_and_marks_it_sent(
    ledger: UnitOfWork, audit: UnitOfWork
) -> None:
    bus = InMemoryBus([Subscription(Noted, audit_noted)], audit)
    await ledger.run(note, 1, 2)
    await ledger.run(note, 3)

    deliveries = await bus.relay(ledger)

    assert [d.handled for d in deliveries] == [("audit__audit_noted",)] * 3
    assert await audit.query(effect_rows) == [("audit", 1), ("audit", 2), ("audit", 3)]
    assert [event.data["n"] for event in bus.published] == [1, 2, 3]
    assert await ledger.query(backlog) == 0
    assert await bus.relay(ledger) == []


async def test_relay_stops_at_a_failing_handler_and_leaves_the_rest_pending(
    ledger: UnitOfWork, audit: UnitOfWork
) -> None:
    bus = InMemoryBus([Subscription(Noted, refuse_noted)], audit)
    await ledger.run(note, 1, 2)

    with pytest.raises(RuntimeError, match="cannot take note 1"):
        await bus.relay(ledger)

    assert await ledger.query(backlog) == 2


async def test_a_handlers_own_events_can_be_relayed_onwards(
    ledger: UnitOfWork, audit: UnitOfWork, tmp_path: Path
) -> None:
    audit_bus = InMemoryBus([Subscription(Noted, audit_and_announce)], audit)
    report = await make_uow(f"sqlite:///{tmp_path / 'report.db'}", "report")
    report_bus = InMemoryBus([Subscription(Audited, count_audited)], report)
    try:
        await ledger.run(note, 9)

        await audit_bus.relay(ledger)
        await report_bus.relay(audit)

        assert [event.type for event in report_bus.published] == ["audit.Audited.v1"]
        assert report_bus.published[0].source == "audit"
        assert await report.query(effect_rows) == [("report", 9)]
    finally:
        await report.dispose()


# wait_for_event and collect_events against a real NATS

SUBJECT = "agora.ledger.events.Noted.v1"


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    with NatsServer(tmp_path / "nats") as server:
        yield server.url


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    connection = await nats.connect(nats_url)
    yield connection.jetstream()
    await connection.close()


async def make_stream(js: JetStreamContext) -> None:
    await js.add_stream(name=stream_name("ledger"), subjects=stream_subjects("ledger"))


async def publish(js: JetStreamContext, *numbers: int) -> list[CloudEvent]:
    sent = []
    for n in numbers:
        cloud_event = envelope(Noted(n=n), source="ledger", subject=f"account-{n}")
        await js.publish(SUBJECT, cloud_event.to_bytes())
        sent.append(cloud_event)
    return sent


async def test_wait_for_event_finds_one_published_before_it_was_called(
    nats_url: str, js: JetStreamContext
) -> None:
    await make_stream(js)
    sent = await publish(js, 1, 2, 3)

    found = await wait_for_event(nats_url, SUBJECT, lambda e: e.data["n"] == 2)

    assert found == sent[1]


async def test_wait_for_event_waits_for_one_published_later(js: JetStreamContext) -> None:
    await make_stream(js)
    waiting = asyncio.create_task(wait_for_event(js, SUBJECT, lambda e: e.data["n"] == 5))
    await asyncio.sleep(0.2)
    assert not waiting.done()

    sent = await publish(js, 4, 5)

    assert await waiting == sent[1]


async def test_wait_for_event_waits_for_the_stream_to_be_made(
    nats_url: str, js: JetStreamContext
) -> None:
    waiting = asyncio.create_task(wait_for_event(nats_url, SUBJECT))
    await asyncio.sleep(0.3)

    await make_stream(js)
    sent = await publish(js, 1)

    assert await waiting == sent[0]


async def test_wait_for_event_gives_up_naming_the_subject_and_what_it_read(
    nats_url: str, js: JetStreamContext
) -> None:
    await make_stream(js)
    await publish(js, 1, 2)

    with pytest.raises(TimeoutError) as raised:
        await wait_for_event(nats_url, SUBJECT, lambda e: e.data["n"] == 99, timeout=0.5)

    message = str(raised.value)
    assert SUBJECT in message
    assert "2 messages read, 0 matched" in message


async def test_wait_for_event_says_when_no_stream_holds_the_subject(nats_url: str) -> None:
    with pytest.raises(TimeoutError, match=r"no stream holds subject 'agora\.nobody\.events"):
        await wait_for_event(nats_url, "agora.nobody.events.Nothing.v1", timeout=0.5)


async def test_wait_for_event_passes_over_messages_that_are_not_cloud_events(
    nats_url: str, js: JetStreamContext
) -> None:
    await make_stream(js)
    await js.publish(SUBJECT, b"not json")
    sent = await publish(js, 1)

    assert await wait_for_event(nats_url, SUBJECT) == sent[0]


async def test_wait_for_event_leaves_a_connection_it_was_given_open(
    js: JetStreamContext, nats_url: str
) -> None:
    await make_stream(js)
    await publish(js, 1)
    connection: Client = await nats.connect(nats_url)
    try:
        await wait_for_event(connection.jetstream(), SUBJECT, stream=stream_name("ledger"))

        assert connection.is_connected
    finally:
        await connection.close()


async def test_collect_events_returns_the_first_matches_in_stream_order(
    nats_url: str, js: JetStreamContext
) -> None:
    await make_stream(js)
    sent = await publish(js, 1, 2, 3, 4, 5)

    found = await collect_events(nats_url, "agora.ledger.>", 2, lambda e: e.data["n"] % 2 == 1)

    assert found == [sent[0], sent[2]]


async def test_collect_events_says_how_many_came_when_too_few_did(
    nats_url: str, js: JetStreamContext
) -> None:
    await make_stream(js)
    await publish(js, 1, 2)

    with pytest.raises(TimeoutError, match=r"fewer than 3 events on subject .*2 matched"):
        await collect_events(nats_url, SUBJECT, 3, timeout=0.5)
