"""The service client against real HTTP callees that hang, fail, recover and break off.

Each callee is an aiohttp server on a free port that counts the calls it gets, so every test
states what reached the callee rather than how long something took.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY

from agora.client import STOPPING_HEADER, BreakerState, CircuitBreaker, ServiceClient
from agora.errors import BadGateway, GatewayTimeout, ServiceUnavailable
from agora_tools.pytest_plugin import SecondsClock
from agora_tools.testing import caller, free_port


@dataclass(frozen=True)
class Seen:
    method: str
    path_qs: str
    headers: CIMultiDictProxy[str]
    body: bytes


class Callee:
    """A stand-in service: answers 503 to the next ``failures`` calls, never answers while
    ``hang`` is set (or on the paths in ``hang_on``), and otherwise says which replica it is
    (with ``status`` when set)."""

    def __init__(self, name: str, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.name = name
        self.host = host
        self.port = port or free_port()
        self.url = f"http://{host}:{self.port}"
        self.stop: Callable[[], Awaitable[None]] | None = None  # set once it is serving
        self.calls: list[Seen] = []
        self.failures = 0
        self.hang = False
        self.hang_on: set[str] = set()  # paths that never answer, while the others do
        self.status: int | None = None
        self.busy = False  # answers 503 with Retry-After, as a service shedding load does
        self.stopping = False  # refuses every request as a replica past its drain does

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.calls.append(Seen(request.method, request.path_qs, request.headers, body))
        if self.failures:
            self.failures -= 1
            return web.json_response({"title": "Service unavailable"}, status=503)
        if self.busy:
            return web.json_response({"title": "Busy"}, status=503, headers={"Retry-After": "1"})
        if self.stopping:
            headers = {STOPPING_HEADER: "1", "Connection": "close"}
            return web.json_response({"title": "Stopping"}, status=503, headers=headers)
        if self.hang or request.path in self.hang_on:
            await asyncio.Event().wait()
        response = web.Response(
            status=self.status or (201 if request.method == "POST" else 200),
            body=orjson.dumps({"replica": self.name, "echo": body.decode()}),
            content_type="application/json",
            headers={"x-replica": self.name},
        )
        response.set_cookie("session", f"of-{self.name}")
        if "gzip" in request.query:
            response.enable_compression()  # only if the caller accepts gzip
        return response


StartCallee = Callable[..., Awaitable[Callee]]
MakeClient = Callable[..., ServiceClient]


@pytest.fixture
async def start_callee() -> AsyncIterator[StartCallee]:
    runners: list[web.AppRunner] = []

    async def start(name: str, host: str = "127.0.0.1", port: int | None = None) -> Callee:
        callee = Callee(name, host, port)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", callee.handle)
        # Cancel a hanging handler once its caller gives up, so the server shuts down at once.
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, host, callee.port).start()
        callee.stop = runner.cleanup
        return callee

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def callee(start_callee: StartCallee) -> Callee:
    """The one replica most tests call, "a"."""
    return await start_callee("a")


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    clients: list[ServiceClient] = []

    def make(service_urls: Mapping[str, Sequence[str]], **options: Any) -> ServiceClient:
        # A tiny backoff keeps retries quick; a long reset keeps open breakers open meanwhile.
        settings: dict[str, Any] = {"backoff": 0.001, "backoff_max": 0.01, "reset_timeout": 60.0}
        settings.update(options)
        client = ServiceClient(service_urls, **settings)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@dataclass(frozen=True)
class Tracing:
    provider: TracerProvider
    spans: InMemorySpanExporter

    def finished(self, name: str) -> ReadableSpan:
        (span,) = [span for span in self.spans.get_finished_spans() if span.name == name]
        return span


@pytest.fixture
def tracing() -> Tracing:
    """A tracer provider of the test's own, so no global one needs setting."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return Tracing(provider, spans)


def parent_span_id(seen: Seen) -> int:
    """The span id the callee's span would take as its parent."""
    _, _, parent_id, _ = seen.headers["traceparent"].split("-")
    return int(parent_id, 16)


def nowhere() -> str:
    """The address of a replica that is down: nothing listens there."""
    return f"http://127.0.0.1:{free_port()}"


@dataclass(frozen=True)
class Failover:
    """A client of the catalog whose first replica is down and whose second, ``live``, is up."""

    live: Callee
    client: ServiceClient


@pytest.fixture
async def failover(start_callee: StartCallee, make_client: MakeClient) -> Failover:
    live = await start_callee("b")
    return Failover(live, make_client({"catalog": [nowhere(), live.url]}))


# --- timeouts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "method", "path", "body", "tries"),
    [
        pytest.param("catalog", "GET", "/products", None, 3, id="a GET is tried three times"),
        pytest.param("orders", "POST", "/orders", {"sku": "X"}, 1, id="a POST is not sent again"),
    ],
)
async def test_a_hanging_callee_gives_a_504_problem_naming_the_service(
    callee: Callee,
    make_client: MakeClient,
    service: str,
    method: str,
    path: str,
    body: dict[str, str] | None,
    tries: int,
) -> None:
    callee.hang = True
    client = make_client({service: [callee.url]}, timeout=0.2, attempts=3)

    with pytest.raises(GatewayTimeout) as raised:
        await client.request(service, method, path, json=body)

    assert raised.value.status == 504
    assert service in str(raised.value.detail)
    assert len(callee.calls) == tries


# --- retries ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "status", "answer", "tries"),
    [
        pytest.param(1, 200, {"replica": "a", "echo": ""}, 2, id="once: the retry succeeds"),
        pytest.param(
            10, 503, {"title": "Service unavailable"}, 3, id="always: the last answer after three"
        ),
    ],
)
async def test_a_get_that_meets_a_503_is_retried_up_to_three_times(
    callee: Callee,
    make_client: MakeClient,
    failures: int,
    status: int,
    answer: dict[str, str],
    tries: int,
) -> None:
    callee.failures = failures
    client = make_client({"catalog": [callee.url]}, attempts=3)

    reply = await client.request("catalog", "GET", "/products")

    assert reply.status == status
    assert reply.json() == answer
    assert len(callee.calls) == tries


async def test_a_500_is_a_bug_not_an_outage_so_it_is_neither_retried_nor_held_against_the_replica(
    callee: Callee, make_client: MakeClient
) -> None:
    callee.status = 500
    client = make_client({"catalog": [callee.url]}, failure_threshold=1)

    reply = await client.request("catalog", "GET", "/products")

    assert reply.status == 500
    assert len(callee.calls) == 1
    assert client.breaker(callee.url).state is BreakerState.CLOSED


async def test_a_busy_answer_comes_back_as_it_came_neither_retried_nor_held_against_the_replica(
    callee: Callee, make_client: MakeClient
) -> None:
    callee.busy = True
    client = make_client({"catalog": [callee.url]}, failure_threshold=1, attempts=3)

    reply = await client.request("catalog", "GET", "/products")
    async with client.stream("catalog", "GET", "/products") as response:
        streamed = response.status, response.headers["Retry-After"]

    assert (reply.status, reply.headers["Retry-After"]) == (503, "1")
    assert reply.json() == {"title": "Busy"}
    assert streamed == (503, "1")
    assert len(callee.calls) == 2
    assert client.breaker(callee.url).state is BreakerState.CLOSED


async def test_a_retry_goes_to_the_next_replica(
    start_callee: StartCallee, make_client: MakeClient
) -> None:
    first, second = await start_callee("a"), await start_callee("b")
    first.failures = 1
    client = make_client({"catalog": [first.url, second.url]})

    reply = await client.request("catalog", "GET", "/products")

    assert reply.json()["replica"] == "b"
    assert (len(first.calls), len(second.calls)) == (1, 1)


async def test_a_post_without_idempotency_key_is_not_retried_after_a_503(
    callee: Callee, make_client: MakeClient
) -> None:
    callee.failures = 1
    client = make_client({"orders": [callee.url]})

    reply = await client.request("orders", "POST", "/orders", json={"sku": "X"})

    assert reply.status == 503
    assert len(callee.calls) == 1


async def test_a_post_with_an_idempotency_key_is_retried_with_the_same_key(
    callee: Callee, make_client: MakeClient
) -> None:
    callee.failures = 1
    client = make_client({"orders": [callee.url]})

    reply = await client.request(
        "orders", "POST", "/orders", json={"sku": "X"}, headers={"Idempotency-Key": "k-1"}
    )

    assert reply.status == 201
    assert [seen.headers["Idempotency-Key"] for seen in callee.calls] == ["k-1", "k-1"]
    assert [seen.body for seen in callee.calls] == [b'{"sku":"X"}', b'{"sku":"X"}']


async def test_a_post_that_could_not_connect_goes_to_the_next_replica(failover: Failover) -> None:
    reply = await failover.client.request("catalog", "POST", "/products", json={"sku": "X"})

    assert reply.status == 201
    assert len(failover.live.calls) == 1


async def test_a_replica_that_came_back_at_a_new_address_is_found_there_at_once(
    start_callee: StartCallee, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recreated container keeps its name and gets a new address: the one the client had
    cached, now refused, is resolved again rather than kept for the cache's lifetime."""
    addresses = {"orders-0": "127.0.0.1"}  # the name service, as the network's DNS would be
    resolve = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        return resolve(addresses.get(host, host), *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    old = await start_callee("old")
    client = make_client({"orders": [f"http://orders-0:{old.port}"]})
    assert (await client.request("orders", "GET", "/orders")).json()["replica"] == "old"

    assert old.stop is not None
    await old.stop()
    new = await start_callee("new", host="127.0.0.2", port=old.port)
    addresses["orders-0"] = new.host
    reply = await client.request("orders", "GET", "/orders")

    assert reply.json()["replica"] == "new"
    assert len(new.calls) == 1


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_call_a_stopping_replica_refused_goes_to_one_whose_breaker_pauses_it(
    start_callee: StartCallee, make_client: MakeClient, method: str
) -> None:
    """A replica back from a restart, its breaker still open from the refusals of its restart,
    takes the calls of the next replica stopping: that one surely cannot take them."""
    back, stopping = await start_callee("back"), await start_callee("stopping")
    stopping.stopping = True
    client = make_client({"orders": [back.url, stopping.url]}, failure_threshold=1)
    client.breaker(back.url).record_failure()

    reply = await client.request("orders", method, "/orders")

    assert reply.json()["replica"] == "back"
    assert (len(stopping.calls), len(back.calls)) == (1, 1)
    assert client.breaker(back.url).state is BreakerState.CLOSED


async def test_a_call_that_found_a_replica_down_goes_to_one_whose_breaker_pauses_it(
    start_callee: StartCallee, make_client: MakeClient
) -> None:
    back = await start_callee("back")
    client = make_client({"orders": [back.url, nowhere()]}, failure_threshold=1)
    client.breaker(back.url).record_failure()

    reply = await client.request("orders", "POST", "/orders", json={})

    assert reply.json()["replica"] == "back"
    assert len(back.calls) == 1


async def test_a_replica_whose_route_keeps_timing_out_is_not_waited_on_when_another_is_gone(
    start_callee: StartCallee, make_client: MakeClient
) -> None:
    slow = await start_callee("slow")
    client = make_client({"orders": [slow.url, nowhere()]}, failure_threshold=1)
    client.route_breaker(slow.url, "GET", "/orders").record_failure()

    with pytest.raises(ServiceUnavailable):
        await client.request("orders", "GET", "/orders")

    assert slow.calls == []


async def test_a_service_down_on_every_replica_gives_a_503_problem_naming_it(
    make_client: MakeClient,
) -> None:
    client = make_client({"catalog": [nowhere(), nowhere()]})

    with pytest.raises(ServiceUnavailable) as raised:
        await client.request("catalog", "GET", "/products")

    assert raised.value.status == 503
    assert "catalog" in str(raised.value.detail)


async def test_a_callee_that_hangs_up_mid_exchange_gives_a_502_problem(
    make_client: MakeClient,
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    port = free_port()
    server = await asyncio.start_server(hang_up, "127.0.0.1", port)
    client = make_client({"catalog": [f"http://127.0.0.1:{port}"]})
    try:
        with pytest.raises(BadGateway) as raised:
            await client.request("catalog", "GET", "/products")
    finally:
        server.close()
        await server.wait_closed()

    assert raised.value.status == 502


async def test_an_unknown_service_gives_a_503_problem(make_client: MakeClient) -> None:
    client = make_client({})

    with pytest.raises(ServiceUnavailable, match="payments"):
        await client.request("payments", "GET", "/")


# --- circuit breaker -------------------------------------------------------------------------


async def test_repeated_failures_open_the_breaker_and_calls_then_fail_fast_without_the_callee(
    callee: Callee, make_client: MakeClient
) -> None:
    callee.failures = 100
    client = make_client({"catalog": [callee.url]}, failure_threshold=3, attempts=1)

    for _ in range(3):
        assert (await client.request("catalog", "GET", "/products")).status == 503
    for _ in range(5):
        with pytest.raises(ServiceUnavailable, match="catalog"):
            await client.request("catalog", "GET", "/products")

    assert len(callee.calls) == 3
    assert client.breaker(callee.url).state is BreakerState.OPEN


@pytest.mark.parametrize(
    ("failures", "status", "state"),
    [
        pytest.param(2, 200, BreakerState.CLOSED, id="a trial that succeeds closes it"),
        pytest.param(3, 503, BreakerState.OPEN, id="a failed trial opens it again"),
    ],
)
async def test_after_the_pause_one_trial_call_goes_through_and_settles_the_breaker(
    callee: Callee, make_client: MakeClient, failures: int, status: int, state: BreakerState
) -> None:
    callee.failures = failures
    client = make_client(
        {"catalog": [callee.url]}, failure_threshold=2, reset_timeout=0.1, attempts=1
    )
    for _ in range(2):
        await client.request("catalog", "GET", "/products")
    assert client.breaker(callee.url).state is BreakerState.OPEN

    await asyncio.sleep(0.15)
    reply = await client.request("catalog", "GET", "/products")

    assert reply.status == status
    assert client.breaker(callee.url).state is state
    assert len(callee.calls) == 3


async def test_a_route_that_keeps_timing_out_stops_being_called_while_the_others_are_served(
    start_callee: StartCallee, make_client: MakeClient
) -> None:
    identity = await start_callee("a")
    identity.hang_on = {"/token"}
    client = make_client({"identity": [identity.url]}, timeout=0.2, failure_threshold=2)

    for _ in range(2):
        with pytest.raises(GatewayTimeout):
            await client.request("identity", "POST", "/token", json={"email": "a@example.com"})
    with pytest.raises(ServiceUnavailable, match="identity"):
        await client.request("identity", "POST", "/token", json={"email": "a@example.com"})
    me = [(await client.request("identity", "GET", "/me")).status for _ in range(5)]

    assert me == [200] * 5
    assert len([seen for seen in identity.calls if seen.path_qs == "/token"]) == 2
    assert client.breaker(identity.url).state is BreakerState.CLOSED
    assert client.route_breaker(identity.url, "POST", "/token").state is BreakerState.OPEN


async def test_calls_named_by_one_route_template_share_its_breaker(
    start_callee: StartCallee, make_client: MakeClient
) -> None:
    catalog = await start_callee("a")
    catalog.hang_on = {"/products/slow-1", "/products/slow-2"}
    client = make_client({"catalog": [catalog.url]}, timeout=0.2, failure_threshold=2, attempts=1)

    for sku in ("slow-1", "slow-2"):
        with pytest.raises(GatewayTimeout):
            await client.request("catalog", "GET", f"/products/{sku}", route="/products/{sku}")
    with pytest.raises(ServiceUnavailable):
        async with client.stream("catalog", "GET", "/products/tea-1", route="/products/{sku}"):
            pass
    listed = await client.request("catalog", "GET", "/products")

    assert listed.status == 200
    assert [seen.path_qs for seen in catalog.calls] == [
        "/products/slow-1",
        "/products/slow-2",
        "/products",
    ]


async def test_the_gauge_of_open_breakers_follows_a_replica_s_breaker_open_and_closed(
    start_callee: StartCallee, make_client: MakeClient
) -> None:
    first, second = await start_callee("a"), await start_callee("b")
    client = make_client(
        {"catalog": [first.url, second.url]},
        service="breaker-gauge",
        failure_threshold=2,
        reset_timeout=0.1,
        attempts=1,
    )
    assert breakers_open("breaker-gauge", "catalog") == 0

    first.failures = 2
    for _ in range(3):  # a fails, b answers, a fails again: a's breaker opens
        await client.request("catalog", "GET", "/products")
    assert breakers_open("breaker-gauge", "catalog") == 1

    await asyncio.sleep(0.15)
    for _ in range(2):  # b, then a's trial call, which succeeds
        assert (await client.request("catalog", "GET", "/products")).status == 200
    assert client.breaker(first.url).state is BreakerState.CLOSED
    assert breakers_open("breaker-gauge", "catalog") == 0


def breakers_open(service: str, peer: str) -> float | None:
    return REGISTRY.get_sample_value(
        "agora_client_breakers_open", {"service": service, "peer": peer}
    )


# --- round robin -----------------------------------------------------------------------------


async def test_calls_alternate_over_the_replicas_and_skip_one_whose_breaker_is_open(
    start_callee: StartCallee, make_client: MakeClient
) -> None:
    first, second = await start_callee("a"), await start_callee("b")
    client = make_client({"catalog": [first.url, second.url]}, failure_threshold=2, attempts=1)

    answered = [
        (await client.request("catalog", "GET", "/products")).json()["replica"] for _ in range(4)
    ]
    assert answered == ["a", "b", "a", "b"]

    first.failures = 100
    for _ in range(4):  # a fails twice, and its breaker opens
        await client.request("catalog", "GET", "/products")
    answered = [
        (await client.request("catalog", "GET", "/products")).json()["replica"] for _ in range(4)
    ]

    assert answered == ["b", "b", "b", "b"]
    assert len(first.calls) == 4


# --- propagation -----------------------------------------------------------------------------


async def test_trace_context_token_and_request_id_reach_the_callee(
    callee: Callee, make_client: MakeClient, tracing: Tracing
) -> None:
    client = make_client({"catalog": [callee.url]}, tracer_provider=tracing.provider)

    with (
        caller(request_id="req-42", token="the-token"),
        tracing.provider.get_tracer("test").start_as_current_span("serving") as serving,
    ):
        await client.request("catalog", "GET", "/products?limit=1")

    client_span = tracing.finished("GET catalog")
    _, trace_id, _, _ = callee.calls[0].headers["traceparent"].split("-")
    assert client_span.context is not None
    assert int(trace_id, 16) == serving.get_span_context().trace_id
    assert parent_span_id(callee.calls[0]) == client_span.context.span_id
    assert client_span.parent is not None
    assert client_span.parent.span_id == serving.get_span_context().span_id
    assert client_span.kind is SpanKind.CLIENT
    assert client_span.attributes is not None
    assert client_span.attributes["peer.service"] == "catalog"
    assert client_span.attributes["http.response.status_code"] == 200
    assert callee.calls[0].headers["Authorization"] == "Bearer the-token"
    assert callee.calls[0].headers["x-request-id"] == "req-42"


async def test_an_authorization_the_caller_set_is_kept(
    callee: Callee, make_client: MakeClient
) -> None:
    client = make_client({"identity": [callee.url]})

    with caller(token="the-users-token"):
        await client.request("identity", "GET", "/me", headers={"authorization": "Bearer svc"})

    assert callee.calls[0].headers.getall("Authorization") == ["Bearer svc"]


async def test_a_cookie_one_callee_sets_never_rides_on_later_calls(
    callee: Callee, make_client: MakeClient
) -> None:
    # By a host name: a cookie jar ignores cookies from bare IP addresses anyway.
    client = make_client({"cart": [callee.url.replace("127.0.0.1", "localhost")]})

    first = await client.request("cart", "GET", "/cart")
    await client.request("cart", "GET", "/cart")

    assert "session=of-a" in first.headers["Set-Cookie"]
    assert "Cookie" not in callee.calls[1].headers


async def test_get_json_gives_the_decoded_answer(callee: Callee, make_client: MakeClient) -> None:
    client = make_client({"identity": [callee.url]})

    assert await client.get_json("identity", "/.well-known/jwks.json") == {
        "replica": "a",
        "echo": "",
    }


# --- stream, the gateway's way through -------------------------------------------------------


async def test_stream_passes_status_headers_and_body_both_ways(
    callee: Callee, make_client: MakeClient, tracing: Tracing
) -> None:
    client = make_client({"catalog": [callee.url]}, tracer_provider=tracing.provider)
    sent = [("Content-Type", "text/plain"), ("x-tag", "one"), ("x-tag", "two")]

    with caller(request_id="req-7"):
        async with client.stream(
            "catalog", "POST", "/things?q=a%20b&q=c", headers=sent, body=b"hello"
        ) as response:
            status, replica, body = (
                response.status,
                response.headers["x-replica"],
                (await response.read()),
            )

    assert (status, replica) == (201, "a")
    assert orjson.loads(body) == {"replica": "a", "echo": "hello"}
    seen = callee.calls[0]
    assert (seen.method, seen.path_qs, seen.body) == ("POST", "/things?q=a%20b&q=c", b"hello")
    assert seen.headers.getall("x-tag") == ["one", "two"]
    assert seen.headers["x-request-id"] == "req-7"
    assert "Accept-Encoding" not in seen.headers  # none was asked for, so none is added
    client_span = tracing.finished("POST catalog")
    assert client_span.context is not None
    assert parent_span_id(seen) == client_span.context.span_id
    assert client_span.attributes is not None
    assert client_span.attributes["http.response.status_code"] == 201


async def test_stream_hands_over_a_compressed_body_as_it_came(
    callee: Callee, make_client: MakeClient
) -> None:
    client = make_client({"catalog": [callee.url]})

    async with client.stream(
        "catalog", "GET", "/products?gzip", headers=[("Accept-Encoding", "gzip")]
    ) as response:
        encoding, body = response.headers["Content-Encoding"], await response.read()

    assert encoding == "gzip"
    assert orjson.loads(gzip.decompress(body))["replica"] == "a"


async def test_stream_passes_a_503_answer_through_without_retrying(
    callee: Callee, make_client: MakeClient
) -> None:
    callee.failures = 1
    client = make_client({"catalog": [callee.url]})

    async with client.stream("catalog", "GET", "/products") as response:
        assert response.status == 503

    assert len(callee.calls) == 1


async def test_stream_retries_a_get_that_got_no_answer_then_gives_a_504_problem(
    callee: Callee, make_client: MakeClient
) -> None:
    callee.hang = True
    client = make_client({"catalog": [callee.url]}, timeout=0.2, attempts=3)

    with pytest.raises(GatewayTimeout):
        async with client.stream("catalog", "GET", "/products"):
            pass

    assert len(callee.calls) == 3


async def test_stream_moves_past_a_replica_that_is_down(failover: Failover) -> None:
    async with failover.client.stream("catalog", "PUT", "/things/1", body=b"{}") as response:
        assert response.headers["x-replica"] == "b"

    assert len(failover.live.calls) == 1


async def test_stream_moves_past_a_stopping_replica_to_one_whose_breaker_pauses_it(
    start_callee: StartCallee, make_client: MakeClient
) -> None:
    back, stopping = await start_callee("back"), await start_callee("stopping")
    stopping.stopping = True
    client = make_client({"orders": [back.url, stopping.url]}, failure_threshold=1)
    client.breaker(back.url).record_failure()

    async with client.stream("orders", "GET", "/orders") as response:
        assert response.headers["x-replica"] == "back"

    assert (len(stopping.calls), len(back.calls)) == (1, 1)


async def test_stream_never_sends_a_streamed_body_twice(failover: Failover) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"{}"

    with pytest.raises(ServiceUnavailable):
        async with failover.client.stream("catalog", "PUT", "/things/1", body=chunks()):
            pass

    assert failover.live.calls == []


async def test_stream_fails_fast_when_the_breaker_is_open(
    callee: Callee, make_client: MakeClient
) -> None:
    callee.failures = 100
    client = make_client({"catalog": [callee.url]}, failure_threshold=2)
    for _ in range(2):
        async with client.stream("catalog", "GET", "/products") as response:
            assert response.status == 503

    with pytest.raises(ServiceUnavailable, match="catalog"):
        async with client.stream("catalog", "GET", "/products"):
            pass

    assert len(callee.calls) == 2


# --- the breaker on its own, on a clock the test moves ----------------------------------------


def test_a_breaker_opens_after_the_threshold_of_consecutive_failures() -> None:
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=5.0, clock=SecondsClock(100.0))

    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # a success in between starts the count again
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.allow()
    breaker.record_failure()

    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()


def opened(clock: SecondsClock) -> CircuitBreaker:
    """A breaker that one failure has just opened, for a pause of five seconds."""
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=5.0, clock=clock)
    breaker.record_failure()
    return breaker


def on_trial(clock: SecondsClock) -> CircuitBreaker:
    """An opened breaker whose pause is over and whose one trial call is out."""
    breaker = opened(clock)
    clock.now += 5.0
    assert breaker.allow()
    return breaker


def test_an_open_breaker_lets_exactly_one_trial_through_after_the_pause() -> None:
    clock = SecondsClock(100.0)
    breaker = opened(clock)

    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()
    assert not breaker.allow()  # the trial is out: everyone else waits for its verdict

    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()


def test_a_failed_trial_starts_a_new_pause() -> None:
    clock = SecondsClock(100.0)
    breaker = on_trial(clock)

    breaker.record_failure()

    assert breaker.state is BreakerState.OPEN
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()


def test_a_trial_that_ended_without_a_verdict_hands_the_trial_to_the_next_call() -> None:
    clock = SecondsClock(100.0)
    breaker = on_trial(clock)

    breaker.release()

    assert breaker.allow()
    assert breaker.state is BreakerState.HALF_OPEN


def test_a_late_failure_does_not_extend_an_open_breakers_pause() -> None:
    clock = SecondsClock(100.0)
    breaker = opened(clock)
    clock.now += 3.0
    breaker.record_failure()
    clock.now += 2.0

    assert breaker.allow()
