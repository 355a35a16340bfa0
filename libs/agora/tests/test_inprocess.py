"""Calls to a service that runs in the caller's process: the service client hands them to its app
directly (agora.inprocess), and the caller sees what a call over the network gives it.

The callee is a chassis app (create_service_app) with no address at all: a call that went to the
network would be refused with "no address known", so an answer proves the call stayed in-process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import StreamingResponse
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from agora import context
from agora.app import ServiceDefinition, create_service_app
from agora.client import IN_PROCESS_ATTRIBUTE, ServiceClient
from agora.errors import BadGateway, GatewayTimeout, ServiceUnavailable
from agora.inprocess import Message, Scope, in_process, serve_in_process
from agora.settings import ServiceSettings
from agora_tools.testing import caller


class CalleeSettings(ServiceSettings):
    service_name: ClassVar[str] = "callee"
    model_config = ServiceSettings.prefixed("AGORA_CALLEE_")


class Callee:
    """What the callee's routes saw and did."""

    def __init__(self) -> None:
        self.hung = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.streamed = asyncio.Event()  # set by the test to let the stream's last chunk go


def callee_app(tmp_path: Path, callee: Callee) -> FastAPI:
    router = APIRouter()

    @router.get("/seen/{what}")
    async def seen(request: Request, what: str) -> dict[str, Any]:
        return {
            "what": what,
            "query": dict(request.query_params),
            "authorization": request.headers.get("authorization"),
            "traceparent": request.headers.get("traceparent"),
            "request_id": context.request_id.get(),
            "bearer_token": context.bearer_token.get(),
            # What the caller bound for its own logs, which would name the wrong service here.
            "log_context": structlog.contextvars.get_contextvars(),
        }

    @router.post("/echo", status_code=201)
    async def echo(request: Request) -> dict[str, Any]:
        return {"body": orjson.loads(await request.body())}

    @router.post("/hang")
    async def hang() -> None:
        callee.hung.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            callee.cancelled.set()
            raise

    @router.get("/events")
    async def events() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"data: one\n\n"
            try:
                await callee.streamed.wait()
            except asyncio.CancelledError:
                callee.cancelled.set()
                raise
            yield b"data: two\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    settings = CalleeSettings(data_dir=tmp_path, log_level="warning")
    return create_service_app(
        settings, ServiceDefinition("Callee", routers=[router]), use_database=False
    )


@pytest.fixture
def callee() -> Callee:
    return Callee()


@pytest.fixture
async def served(tmp_path: Path, callee: Callee) -> AsyncIterator[FastAPI]:
    """The callee's app, started (its lifespan run) and served in this process as "callee"."""
    app = callee_app(tmp_path, callee)
    async with app.router.lifespan_context(app):
        stop = serve_in_process("callee", app)
        try:
            yield app
        finally:
            stop()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def client(spans: InMemorySpanExporter) -> AsyncIterator[ServiceClient]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    made = ServiceClient({}, timeout=0.5, backoff=0.001, backoff_max=0.01, tracer_provider=provider)
    yield made
    await made.close()


async def test_a_call_reaches_the_app_in_process_with_the_callers_token_request_id_and_trace(
    served: FastAPI, client: ServiceClient, spans: InMemorySpanExporter
) -> None:
    with caller(token="a-users-token", request_id="req-42"):
        reply = await client.request("callee", "GET", "/seen/a%20b", params={"q": "x y"})

    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["x-request-id"] == "req-42"
    seen = reply.json()
    assert seen["what"] == "a b"
    assert seen["query"] == {"q": "x y"}
    assert seen["authorization"] == "Bearer a-users-token"
    # The callee's own middleware took the request id and the token from the headers.
    assert seen["request_id"] == "req-42"
    assert seen["bearer_token"] == "a-users-token"
    (span,) = spans.get_finished_spans()
    assert span.kind is SpanKind.CLIENT
    assert span.attributes is not None
    assert span.attributes[IN_PROCESS_ATTRIBUTE] is True
    assert span.attributes["peer.service"] == "callee"
    assert span.attributes["http.response.status_code"] == 200
    # The callee's span is the child of this one, as over the network.
    assert span.context is not None
    assert seen["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"


async def test_the_callees_context_stays_its_own(served: FastAPI, client: ServiceClient) -> None:
    with (
        caller(token="a-users-token", request_id="req-7"),
        structlog.contextvars.bound_contextvars(service="the-caller"),
    ):
        seen = (await client.request("callee", "GET", "/seen/x")).json()
        # The callee set and reset its own request id and token in a task of its own...
        assert context.request_id.get() == "req-7"
        assert context.bearer_token.get() == "a-users-token"
    # ...which starts from a context of its own, as in another process: nothing the caller
    # bound reaches it but what the headers carry.
    assert seen["log_context"] == {}
    assert seen["request_id"] == "req-7"


async def test_a_body_goes_in_and_the_answer_comes_back(
    served: FastAPI, client: ServiceClient
) -> None:
    reply = await client.request("callee", "POST", "/echo", json={"lines": [1, 2]})

    assert reply.status == 201
    assert reply.json() == {"body": {"lines": [1, 2]}}


async def test_a_problem_answer_comes_back_as_it_is(served: FastAPI, client: ServiceClient) -> None:
    reply = await client.request("callee", "GET", "/nowhere")

    assert reply.status == 404
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["status"] == 404


async def test_a_hanging_callee_gives_a_504_problem_and_its_work_is_cancelled(
    served: FastAPI, client: ServiceClient, callee: Callee
) -> None:
    with pytest.raises(GatewayTimeout) as raised:
        await client.request("callee", "POST", "/hang")  # not idempotent: tried once

    assert raised.value.detail == "callee did not answer within 0.5 s"
    await asyncio.wait_for(callee.cancelled.wait(), timeout=30)


class Failing:
    """A raw ASGI callee that fails ``failures`` times (raising before it answers, or with
    ``status``), then answers 200; it counts the calls it got."""

    def __init__(self, failures: int, status: int | None = None) -> None:
        self.failures = failures
        self.status = status
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            if self.status is None:
                raise RuntimeError("the callee fell over")
            await answer(send, self.status, b'{"title": "unavailable"}')
            return
        await answer(send, 200, b'{"ok": true}')


async def answer(send: Any, status: int, body: bytes) -> None:
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json")],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def failing() -> Iterator[Failing]:
    app = Failing(failures=0)
    stop = serve_in_process("failing", app)
    yield app
    stop()


async def test_a_get_that_meets_a_503_is_retried_as_over_the_network(
    failing: Failing, client: ServiceClient
) -> None:
    failing.failures, failing.status = 2, 503

    reply = await client.request("failing", "GET", "/anything")

    assert (reply.status, failing.calls) == (200, 3)


async def test_a_callee_that_fails_before_answering_gives_a_502_problem(
    failing: Failing, client: ServiceClient
) -> None:
    failing.failures = 10

    with pytest.raises(BadGateway) as raised:
        await client.request("failing", "POST", "/orders")

    assert raised.value.detail == "failing broke off the exchange"
    assert failing.calls == 1  # a POST without an Idempotency-Key is not tried again


async def test_repeated_failures_open_the_in_process_callees_breaker(
    failing: Failing, client: ServiceClient
) -> None:
    failing.failures, failing.status = 100, 503
    for _ in range(5):
        await client.request("failing", "POST", "/orders")

    with pytest.raises(ServiceUnavailable):
        await client.request("failing", "POST", "/orders")
    assert failing.calls == 5  # the sixth call never reached it


async def test_a_stream_hands_over_the_body_as_the_callee_sends_it(
    served: FastAPI, client: ServiceClient, callee: Callee
) -> None:
    async with client.stream("callee", "GET", "/events") as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = response.content.iter_any()
        assert await anext(chunks) == b"data: one\n\n"
        callee.streamed.set()
        assert await anext(chunks) == b"data: two\n\n"
        assert await anext(chunks, None) is None


async def test_leaving_a_stream_early_stops_the_callee(
    served: FastAPI, client: ServiceClient, callee: Callee
) -> None:
    async with client.stream("callee", "GET", "/events") as response:
        assert await anext(response.content.iter_any()) == b"data: one\n\n"
    # Released before its second chunk: the callee's work is cancelled, not left waiting.
    await asyncio.wait_for(callee.cancelled.wait(), timeout=30)


async def test_a_stream_sends_a_body_through(served: FastAPI, client: ServiceClient) -> None:
    body = orjson.dumps({"sku": "X-1"})
    async with client.stream(
        "callee", "POST", "/echo", headers=[("content-type", "application/json")], body=body
    ) as response:
        assert response.status == 201
        assert orjson.loads(await response.read()) == {"body": {"sku": "X-1"}}


async def test_once_no_longer_served_in_process_calls_go_to_the_network(
    tmp_path: Path, callee: Callee, client: ServiceClient
) -> None:
    stop = serve_in_process("callee", callee_app(tmp_path, callee))
    assert in_process("callee") is not None
    stop()

    assert in_process("callee") is None
    with pytest.raises(ServiceUnavailable, match="no address known for callee"):
        await client.request("callee", "GET", "/seen/x")


def test_a_name_is_served_by_one_app_at_a_time(tmp_path: Path, callee: Callee) -> None:
    app = callee_app(tmp_path, callee)
    stop = serve_in_process("callee", app)
    try:
        with pytest.raises(ValueError, match="callee is already served"):
            serve_in_process("callee", app)
    finally:
        stop()
