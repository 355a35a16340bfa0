"""Database statements and Redis commands as spans, when the settings' ``trace_statements``
(AGORA_TRACE_STATEMENTS) asks for them: each one a child of the request or message that ran it,
naming the statement and never the values sent with it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import redis
import redis.asyncio
from fastapi import APIRouter, Request
from opentelemetry import trace
from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection, text

from agora.app import Resources, ServiceDefinition, create_service_app
from agora.db import UnitOfWork
from agora.messaging import schema
from agora.messaging.broker import Broker
from agora.messaging.envelope import CloudEvent
from agora.messaging.subscriptions import Subscription
from agora.settings import ServiceSettings
from agora.telemetry import SPANS_KEPT, configure_tracing, recent_spans
from agora_tools.testing import NatsServer, connected, eventually, quick_consumers

pytestmark = pytest.mark.timeout(60)

REDIS_URL = "redis://127.0.0.1:6379/0"
# What a statement or command is sent with: it must show in no span.
SECRET = "card-4242-and-an-address"
SAID = text("SELECT :word AS said")
# What a loop runs on its own (a relay looking at its outbox).
ALONE = text("SELECT 1 AS alone")
# How each store's driver is sent SAID.
PLACEHOLDERS = {"sqlite": "SELECT ? AS said", "postgresql": "SELECT $1 AS said"}


@pytest.fixture
def traced() -> None:
    """Commands asked for, and the process's tracing configured (the first call in the process
    wins, but each call asks for Redis's spans when they are wanted)."""
    configure_tracing("spans-test", trace_statements=True)


def every_span() -> list[dict[str, Any]]:
    return recent_spans().find(limit=SPANS_KEPT)


def say(connection: Connection, word: str) -> str:
    said: str = connection.execute(SAID, {"word": word}).scalar_one()
    return said


def statements(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [span for span in spans if "said" in str(span["attributes"].get("db.statement", ""))]


def assert_shows_no_values(spans: list[dict[str, Any]]) -> None:
    assert SECRET not in repr(spans)


def assert_a_client_span_of(span: dict[str, Any], parent: dict[str, Any]) -> None:
    assert span["kind"] == "client"
    assert span["parent_id"] == parent["span_id"]
    assert span["trace_id"] == parent["trace_id"]
    assert span["service"] == parent["service"]


# -- a request --------------------------------------------------------------------------------


def sayings() -> APIRouter:
    router = APIRouter()

    @router.get("/say")
    async def say_it(request: Request) -> dict[str, str]:
        resources: Resources = request.app.state.resources
        assert resources.uow is not None
        return {"said": await resources.uow.query(say, SECRET)}

    return router


@pytest.mark.usefixtures("traced")
async def test_a_statement_a_request_runs_is_a_span_under_it_without_its_values(
    tmp_path: Path, database_url: str, store: str
) -> None:
    settings = ServiceSettings(data_dir=tmp_path, database_url=database_url, trace_statements=True)
    app = create_service_app(settings, ServiceDefinition("shop", routers=[sayings()]))
    resources: Resources = app.state.resources
    trace_id = uuid.uuid4().hex
    headers = {"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"}
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            answer = await client.get("/say", headers=headers)
    finally:
        await resources.client.close()
        assert resources.uow is not None
        await resources.uow.dispose()
    assert answer.json() == {"said": SECRET}

    spans = recent_spans().find(trace_id=trace_id)

    (server,) = [span for span in spans if span["kind"] == "server"]
    # One span for the one statement: none for the BEGIN, none twice over (asyncpg's layer).
    (statement,) = [span for span in spans if span["kind"] == "client"]
    assert_a_client_span_of(statement, server)
    assert statement["attributes"]["db.system"] == store
    assert statement["attributes"]["db.statement"] == PLACEHOLDERS[store]
    assert_shows_no_values(spans)


async def test_statements_are_no_spans_unless_asked_for(tmp_path: Path) -> None:
    configure_tracing("spans-test")
    uow = UnitOfWork(f"sqlite:///{tmp_path / 'quiet.db'}")
    try:
        with trace.get_tracer("test").start_as_current_span("read a note") as begun:
            await uow.query(say, "quiet")
    finally:
        await uow.dispose()

    spans = recent_spans().find(trace_id=format(begun.get_span_context().trace_id, "032x"))

    assert [span["name"] for span in spans] == ["read a note"]


@pytest.mark.usefixtures("traced")
async def test_a_statement_run_inside_no_span_is_no_span(tmp_path: Path) -> None:
    uow = UnitOfWork(f"sqlite:///{tmp_path / 'alone.db'}", trace_statements=True)
    try:
        await uow.query(lambda connection: connection.execute(ALONE).all())
    finally:
        await uow.dispose()

    assert not [
        span for span in every_span() if span["attributes"].get("db.statement") == ALONE.text
    ]


@pytest.mark.parametrize(
    ("variable", "asked"),
    [(None, False), ("", False), ("false", False), ("true", True), ("1", True), ("on", True)],
)
def test_the_settings_ask_for_statements_through_agora_trace_statements(
    monkeypatch: pytest.MonkeyPatch, variable: str | None, asked: bool
) -> None:
    if variable is None:
        monkeypatch.delenv("AGORA_TRACE_STATEMENTS", raising=False)
    else:
        monkeypatch.setenv("AGORA_TRACE_STATEMENTS", variable)

    assert ServiceSettings().trace_statements is asked


def test_a_value_that_is_neither_on_nor_off_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGORA_TRACE_STATEMENTS", "sometimes")

    with pytest.raises(ValidationError, match="AGORA_TRACE_STATEMENTS"):
        ServiceSettings()


# -- a message --------------------------------------------------------------------------------


class Noted(BaseModel):
    type: ClassVar[str] = "ledger.Noted.v1"
    note: str


def note(connection: Connection, event: Noted, envelope: CloudEvent) -> None:
    say(connection, event.note)


@pytest.fixture
async def broker(nats_server: NatsServer) -> AsyncIterator[Broker]:
    broker = await connected(Broker(nats_server.url, name="spans-test", connect_timeout=1.0))
    yield broker
    await broker.close()


@pytest.mark.usefixtures("traced")
async def test_a_statement_a_message_runs_is_a_span_under_it_without_its_values(
    tmp_path: Path, broker: Broker
) -> None:
    service = f"ledger{uuid.uuid4().hex[:8]}"  # of the test's own: the process's spans are shared
    uow = UnitOfWork(f"sqlite:///{tmp_path / 'consumer.db'}", trace_statements=True)
    await uow.run(lambda connection: schema.metadata.create_all(connection))
    subscription = Subscription(Noted, note)
    consumers = quick_consumers(service, uow, broker, [subscription])
    event = CloudEvent(source="ledger", type=Noted.type, subject="n-1", data={"note": SECRET})
    await broker.ensure_stream("ledger")
    await broker.js.publish(
        subscription.subject, event.to_bytes(), headers={"Nats-Msg-Id": event.id}
    )
    task = asyncio.create_task(consumers.run())
    try:

        async def handled() -> bool:
            return bool(statements(recent_spans().find(service=service)))

        await eventually(handled, "the message was not handled")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await uow.dispose()

    spans = recent_spans().find(service=service)
    (consumed,) = [span for span in spans if span["kind"] == "consumer"]
    (statement,) = statements(spans)
    assert_a_client_span_of(statement, consumed)
    assert statement["attributes"]["db.statement"] == PLACEHOLDERS["sqlite"]
    assert_shows_no_values(spans)


# -- Redis ------------------------------------------------------------------------------------


@pytest.fixture
def key() -> Iterator[str]:
    """A key of the test's own, deleted afterwards."""
    key = f"agora-test:spans:{uuid.uuid4().hex}"
    yield key
    with redis.Redis.from_url(REDIS_URL) as client:
        client.delete(key)


def command_spans(trace_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The span a test began and the Redis commands' spans of its trace."""
    spans = recent_spans().find(trace_id=trace_id)
    (begun,) = [span for span in spans if span["name"] == "fill a cart"]
    commands = [span for span in spans if span["attributes"].get("db.system") == "redis"]
    assert_shows_no_values(spans)
    return begun, sorted(commands, key=lambda span: span["start"])


def assert_commands(begun: dict[str, Any], commands: list[dict[str, Any]]) -> None:
    assert [span["name"] for span in commands] == ["HSET", "HGET"]
    assert [span["attributes"]["db.statement"] for span in commands] == [
        "HSET ? ? ?",
        "HGET ? ?",
    ]
    for span in commands:
        assert_a_client_span_of(span, begun)


@pytest.mark.usefixtures("traced")
async def test_a_redis_command_is_a_span_under_the_one_that_sent_it_without_its_values(
    key: str,
) -> None:
    async with redis.asyncio.Redis.from_url(REDIS_URL) as client:
        with trace.get_tracer("test").start_as_current_span("fill a cart") as span:
            await client.hset(key, "sku-1", SECRET)
            assert await client.hget(key, "sku-1") == SECRET.encode()
        # Inside no span: none of its own.
        assert await client.hexists(key, "sku-1")

    assert_commands(*command_spans(format(span.get_span_context().trace_id, "032x")))
    assert "HEXISTS" not in {span["name"] for span in every_span()}


@pytest.mark.usefixtures("traced")
def test_a_blocking_clients_redis_command_is_a_span_too(key: str) -> None:
    with (
        redis.Redis.from_url(REDIS_URL) as client,
        trace.get_tracer("test").start_as_current_span("fill a cart") as span,
    ):
        client.hset(key, "sku-1", SECRET)
        assert client.hget(key, "sku-1") == SECRET.encode()

    assert_commands(*command_spans(format(span.get_span_context().trace_id, "032x")))
