"""What a service shows the operations console: its recent spans and log lines by trace, its
outbox backlog, and the metrics the service map is drawn from."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import structlog
from aiohttp import web
from fastapi import APIRouter, FastAPI, Request
from opentelemetry import trace
from prometheus_client import REGISTRY
from pydantic import BaseModel
from sqlalchemy import Connection

from agora.app import Resources, ServiceDefinition, create_service_app
from agora.client import ServiceClient
from agora.db import UnitOfWork
from agora.messaging import record, schema
from agora.messaging.broker import Broker
from agora.messaging.envelope import CloudEvent
from agora.messaging.relay import Relay
from agora.messaging.subscriptions import Subscription
from agora.observe import recent_spans
from agora.settings import ServiceSettings
from agora.telemetry import configure_tracing, tracer_provider
from agora_tools.testing import NatsServer, connected, free_port, http_receiver, quick_consumers

pytestmark = pytest.mark.timeout(60)

LOGGER = "test.notes"
# What the console sends to read /internal/*: every app here is given it.
OPERATOR_TOKEN = "operator-token-for-the-tests"
AS_OPERATOR = {"authorization": f"Bearer {OPERATOR_TOKEN}"}
log = structlog.get_logger(LOGGER)


def new_name() -> str:
    """A service of the test's own: the process's spans, lines and counters are shared."""
    return f"shop{uuid.uuid4().hex[:8]}"


def settings_for(name: str, **values: Any) -> ServiceSettings:
    class ShopSettings(ServiceSettings):
        service_name: ClassVar[str] = name
        model_config = ServiceSettings.prefixed(f"AGORA_{name.upper()}_")

    return ShopSettings(**{"operator_token": OPERATOR_TOKEN, **values})


def notes() -> APIRouter:
    router = APIRouter()

    @router.get("/notes/{note_id}")
    async def read_note(note_id: int) -> dict[str, int]:
        log.info("note read", note_id=note_id)
        with trace.get_tracer("test").start_as_current_span("look up note"):
            pass
        return {"id": note_id}

    @router.get("/broken")
    async def broken() -> None:
        raise RuntimeError("a bug")

    @router.get("/stock/{peer}")
    async def stock(peer: str, request: Request) -> dict[str, int]:
        resources: Resources = request.app.state.resources
        reply = await resources.client.request(peer, "GET", "/items")
        return {"status": reply.status}

    return router


def build(name: str, tmp_path: Path, **values: Any) -> FastAPI:
    settings = settings_for(name, data_dir=tmp_path, **values)
    return create_service_app(settings, ServiceDefinition(name, routers=[notes()]))


@contextlib.asynccontextmanager
async def calling(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    resources: Resources = app.state.resources
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://shop", headers=AS_OPERATOR
        ) as client:
            yield client
    finally:
        await resources.client.close()
        if resources.uow is not None:
            await resources.uow.dispose()


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with calling(build(new_name(), tmp_path)) as client:
        yield client


def traceparent() -> tuple[str, str, dict[str, str]]:
    """A caller's trace id and span id, and the header carrying them."""
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return trace_id, span_id, {"traceparent": f"00-{trace_id}-{span_id}-01"}


async def traced_get(client: httpx.AsyncClient, path: str) -> tuple[str, httpx.Response]:
    """GET ``path`` as a caller in a trace of its own: that trace's id, and the answer."""
    trace_id, _, headers = traceparent()
    return trace_id, await client.get(path, headers=headers)


async def spans_of(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    answer = await client.get("/internal/spans", params=params)
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["spans"]
    return found


async def logs_of(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    answer = await client.get("/internal/logs", params=params)
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["logs"]
    return found


# -- spans ------------------------------------------------------------------------------------


async def test_a_request_is_a_server_span_with_its_children_at_internal_spans(
    shop: httpx.AsyncClient,
) -> None:
    trace_id, caller, headers = traceparent()
    await shop.get("/notes/7", headers=headers)

    answer = await shop.get("/internal/spans", params={"trace_id": trace_id})

    body = answer.json()
    assert body["service"].startswith("shop")
    assert body["replica"] == 0
    server, child = body["spans"]  # newest first: the server span ends last
    assert server["name"] == "GET /notes/{note_id}"
    assert server["kind"] == "server"
    assert server["trace_id"] == trace_id
    assert server["parent_id"] == caller
    assert server["status"] == "ok"
    assert server["service"] == body["service"]
    assert server["replica"] == 0
    assert server["duration_ms"] > 0
    assert server["start"] > 1.7e9
    assert server["attributes"]["http.route"] == "/notes/{note_id}"
    assert server["attributes"]["http.response.status_code"] == 200
    assert len(server["span_id"]) == 16
    # A span begun inside the request belongs to the same service.
    assert child["name"] == "look up note"
    assert child["kind"] == "internal"
    assert child["parent_id"] == server["span_id"]
    assert child["service"] == body["service"]


async def test_a_failed_request_is_a_span_in_error(shop: httpx.AsyncClient) -> None:
    trace_id, answer = await traced_get(shop, "/broken")
    assert answer.status_code == 500

    (span,) = await spans_of(shop, trace_id=trace_id)

    assert span["status"] == "error"
    assert span["attributes"]["http.response.status_code"] == 500


async def test_spans_are_filtered_by_trace_and_limited_newest_first(
    shop: httpx.AsyncClient,
) -> None:
    first, _ = await traced_get(shop, "/notes/1")
    second, _ = await traced_get(shop, "/notes/2")

    only_first = await spans_of(shop, trace_id=first.upper())
    newest = await spans_of(shop, limit=1)
    every = await spans_of(shop)

    assert {span["trace_id"] for span in only_first} == {first}
    assert len(only_first) == 2
    assert [span["trace_id"] for span in newest] == [second]
    assert [span["trace_id"] for span in every] == [second, second, first, first]


@pytest.mark.parametrize("path", ["/internal/spans", "/internal/logs"])
@pytest.mark.parametrize(
    "params",
    [{"trace_id": "not-a-trace"}, {"trace_id": "a" * 31}, {"limit": 0}, {"limit": 2001}],
)
async def test_a_bad_trace_id_or_limit_is_a_422_problem(
    shop: httpx.AsyncClient, path: str, params: dict[str, Any]
) -> None:
    answer = await shop.get(path, params=params)

    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["errors"]


async def test_the_consoles_own_requests_are_neither_traced_nor_logged(
    shop: httpx.AsyncClient,
) -> None:
    for path in ("/internal/spans", "/internal/logs", "/internal/outbox"):
        assert (await shop.get(path)).status_code == 200

    spans = await spans_of(shop, limit=2000)
    lines = await logs_of(shop, limit=2000)

    assert not [s for s in spans if str(s["attributes"].get("url.path")).startswith("/internal")]
    assert not [line for line in lines if str(line.get("path")).startswith("/internal")]


async def test_the_internal_routes_are_not_in_the_openapi_document(
    shop: httpx.AsyncClient,
) -> None:
    paths = (await shop.get("/openapi.json")).json()["paths"]

    assert "/notes/{note_id}" in paths
    assert not [path for path in paths if path.startswith("/internal")]


async def test_each_span_names_its_own_service_when_one_process_holds_several(
    tmp_path: Path,
) -> None:
    # Built one after the other, as in a test process: the tracer provider is the first one's.
    alpha, beta = new_name(), new_name()
    async with (
        calling(build(alpha, tmp_path / "a")) as first,
        calling(build(beta, tmp_path / "b")) as second,
    ):
        trace_id, _ = await traced_get(first, "/notes/1")

        alphas = await spans_of(first, trace_id=trace_id)
        betas = await spans_of(second, trace_id=trace_id)
        lines = await logs_of(first, trace_id=trace_id)

    assert {span["service"] for span in alphas} == {alpha}
    assert len(alphas) == 2
    assert betas == []
    assert {line["service"] for line in lines} == {alpha}


# -- logs -------------------------------------------------------------------------------------


async def test_the_lines_written_during_a_request_are_at_internal_logs_by_trace(
    shop: httpx.AsyncClient,
) -> None:
    trace_id, _ = await traced_get(shop, "/notes/7")
    await traced_get(shop, "/notes/8")

    answer = await shop.get("/internal/logs", params={"trace_id": trace_id})

    body = answer.json()
    # Newest first (the access line is written last); libraries may write lines of their own.
    access, note = [line for line in body["logs"] if line["logger"] in ("agora.http", LOGGER)]
    assert note["event"] == "note read"
    assert note["note_id"] == 7
    assert note["trace_id"] == trace_id
    assert note["level"] == "info"
    assert note["service"] == body["service"]
    assert access["event"] == "request"
    assert access["route"] == "/notes/{note_id}"
    assert access["status"] == 200
    assert len(await logs_of(shop, limit=1)) == 1


# -- the outbox -------------------------------------------------------------------------------


class Shipped(BaseModel):
    type: ClassVar[str] = "shop.Shipped.v1"
    order: str


class Dispatched(BaseModel):
    type: ClassVar[str] = "depot.Dispatched.v1"
    order: str


class Pack(BaseModel):
    type: ClassVar[str] = "packing.Pack.v1"
    kind: ClassVar[str] = "command"
    order: str


def create_tables(connection: Connection) -> None:
    schema.metadata.create_all(connection)


def ship(connection: Connection, order: str) -> None:
    record(connection, Shipped(order=order), aggregate=order)


async def test_a_service_without_a_database_has_no_outbox(tmp_path: Path) -> None:
    settings = settings_for(new_name(), data_dir=tmp_path)
    app = create_service_app(settings, ServiceDefinition("stateless"), use_database=False)
    async with calling(app) as client:
        body = (await client.get("/internal/outbox")).json()

    assert body == {
        "service": settings.service_name,
        "replica": 0,
        "outbox": False,
        "pending": 0,
        "oldest_pending_seconds": None,
    }


async def test_a_service_whose_database_has_no_outbox_says_so(shop: httpx.AsyncClient) -> None:
    body = (await shop.get("/internal/outbox")).json()

    assert (body["outbox"], body["pending"], body["oldest_pending_seconds"]) == (False, 0, None)


@pytest.fixture
async def broker(nats_server: NatsServer) -> AsyncIterator[Broker]:
    broker = await connected(Broker(nats_server.url, name="observe-test", connect_timeout=1.0))
    yield broker
    await broker.close()


async def test_the_outbox_counts_pending_events_until_the_relay_publishes_them(
    tmp_path: Path, broker: Broker
) -> None:
    name = new_name()
    app = build(name, tmp_path, replica=2)
    uow: UnitOfWork = app.state.resources.uow
    async with calling(app) as client:
        await uow.run(create_tables)
        with trace.get_tracer("test").start_as_current_span("check out") as checkout:
            await uow.run(ship, "order-1")
            await uow.run(ship, "order-2")
        before = (await client.get("/internal/outbox")).json()

        assert await Relay(uow, broker, service=name).publish_pending() == 2
        after = (await client.get("/internal/outbox")).json()
        trace_id = format(checkout.get_span_context().trace_id, "032x")
        spans = await spans_of(client, trace_id=trace_id)
        published = [span for span in spans if span["name"].endswith(" publish")]

    assert before["service"] == name
    assert before["replica"] == 2
    assert before["outbox"] is True
    assert before["pending"] == 2
    assert 0 <= before["oldest_pending_seconds"] < 30
    assert (after["pending"], after["oldest_pending_seconds"]) == (0, None)
    # The relay's spans say which order each event was about.
    assert sorted(span["attributes"]["agora.subject"] for span in published) == [
        "order-1",
        "order-2",
    ]
    for span in published:
        assert span["kind"] == "producer"
        assert span["service"] == name
        assert span["attributes"]["agora.event_type"] == "shop.Shipped.v1"


# -- metrics ----------------------------------------------------------------------------------


async def test_metrics_name_the_service_its_version_and_replica_and_the_process_start(
    tmp_path: Path,
) -> None:
    name = new_name()
    async with calling(build(name, tmp_path, replica=3, version="1.2.3")) as client:
        metrics = (await client.get("/metrics")).text

    assert f'agora_service_info{{replica="3",service="{name}",version="1.2.3"}} 1.0' in metrics
    assert "\nprocess_start_time_seconds " in metrics


class Peer:
    """A service called by name, answering with the status it is told to."""

    def __init__(self) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.status = 200

    async def handle(self, _: web.Request) -> web.Response:
        return web.json_response({}, status=self.status)


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    peer = Peer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", peer.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(peer.url.rsplit(":", 1)[1])).start()
    yield peer
    await runner.cleanup()


def calls(service: str, peer: str, outcome: str) -> float:
    labels = {"service": service, "peer": peer, "outcome": outcome}
    return REGISTRY.get_sample_value("agora_client_requests_total", labels) or 0.0


async def test_a_services_calls_to_its_peers_are_counted_by_outcome(
    tmp_path: Path, peer: Peer
) -> None:
    name = new_name()
    gone = f"http://127.0.0.1:{free_port()}"
    urls = {"stock": [peer.url], "gone": [gone]}
    app = build(name, tmp_path, service_urls=urls, client_timeout=1.0)
    async with calling(app) as client:
        await client.get("/stock/stock")
        peer.status = 404
        await client.get("/stock/stock")
        await client.get("/stock/stock")
        assert (await client.get("/stock/gone")).status_code == 503

    assert calls(name, "stock", "2xx") == 1
    assert calls(name, "stock", "4xx") == 2
    # No answer: counted once, however many times the call was tried.
    assert calls(name, "gone", "error") == 1


async def test_the_gateways_streamed_calls_are_counted_too(peer: Peer) -> None:
    name = new_name()
    client = ServiceClient({"stock": [peer.url]}, service=name, attempts=1)
    try:
        peer.status = 503
        async with client.stream("stock", "GET", "/items") as response:
            assert response.status == 503
    finally:
        await client.close()

    assert calls(name, "stock", "5xx") == 1


# -- the consumer -----------------------------------------------------------------------------


def received(service: str, source: str, kind: str) -> float:
    labels = {"service": service, "source": source, "kind": kind}
    return REGISTRY.get_sample_value("agora_messages_received_total", labels) or 0.0


def ignore(connection: Connection, event: BaseModel, envelope: CloudEvent) -> None:
    pass


def pack(connection: Connection, event: BaseModel, envelope: CloudEvent) -> None:
    pass


async def eventually(check: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(20):
            while True:
                if check():
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"{what} (not within 20 s)")


async def test_messages_taken_are_counted_by_sender_and_kind_once_each(
    tmp_path: Path, broker: Broker
) -> None:
    configure_tracing("observe-test")  # the first call in the process wins
    service = new_name()
    uow = UnitOfWork(f"sqlite:///{tmp_path / 'consumer.db'}")
    await uow.run(create_tables)
    consumers = quick_consumers(
        service, uow, broker, [Subscription(Dispatched, ignore), Subscription(Pack, pack)]
    )
    event = CloudEvent(source="depot", type=Dispatched.type, subject="order-9", data={"order": "9"})
    command = CloudEvent(source="orders", type=Pack.type, subject="order-9", data={"order": "9"})
    await broker.ensure_stream("depot")
    await broker.ensure_stream("packing")
    # The event twice, under two message ids: the second is a redelivery the inbox skips.
    for message_id in (event.id, f"{event.id}:again"):
        await broker.js.publish(
            Subscription(Dispatched, ignore).subject,
            event.to_bytes(),
            headers={"Nats-Msg-Id": message_id},
        )
    await broker.js.publish(
        Subscription(Pack, pack).subject,
        command.to_bytes(),
        headers={"Nats-Msg-Id": command.id},
    )
    task = asyncio.create_task(consumers.run())
    try:

        def taken() -> bool:
            duplicates = REGISTRY.get_sample_value(
                "agora_events_consumed_total",
                {"service": service, "consumer": f"{service}__ignore", "outcome": "duplicate"},
            )
            return bool(duplicates) and received(service, "orders", "command") == 1

        await eventually(taken, "the messages were not all taken")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await uow.dispose()

    assert received(service, "depot", "event") == 1
    assert received(service, "orders", "command") == 1
    processed = recent_spans().find(service=service, limit=2000)
    assert {span["attributes"]["agora.subject"] for span in processed} == {"order-9"}
    assert {span["attributes"]["agora.event_type"] for span in processed} == {
        Dispatched.type,
        Pack.type,
    }
    assert {span["kind"] for span in processed} == {"consumer"}


# -- export -----------------------------------------------------------------------------------


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector that keeps what it is sent."""

    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    with http_receiver(Collector) as url:
        yield url


def test_spans_go_to_the_otlp_collector_the_environment_names(
    collector: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector)
    Collector.received.clear()
    provider = tracer_provider("exported-shop")
    try:
        with provider.get_tracer("test").start_as_current_span("exported work"):
            pass
        assert provider.force_flush(timeout_millis=5000)
    finally:
        provider.shutdown()

    ((path, content_type, body),) = Collector.received
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    assert b"exported-shop" in body
    assert b"exported work" in body
