"""The operations console at /console: who may see it, and what it shows of replicas that answer
(and stop answering) like the services do: /readyz, /metrics, /internal/spans, /internal/logs and
/internal/outbox, served by small fakes on free ports, with the gateway itself over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from agora.messaging.broker import Broker
from agora.topology import Topology
from agora_tools.testing import NatsServer, connected, found_within, free_port
from consistency.checks import Report, Violation
from consistency.snapshot import ReadFailed
from gateway.bootstrap import create_app
from gateway.console import metrics, servicemap, traces, verify
from gateway.console.events import RecentEvents, seen_event
from gateway.console.metrics import Flow, Scrape
from gateway.settings import GatewaySettings

from .conftest import Keys, Served, Upstream

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
ORDER = "0b7e1c52-6f35-4b64-9c39-0d1c1f7ad3aa"


# --- the numbers, from canned Prometheus text ---------------------------------------------------


def exposition(n: int, *, errors: int = 1) -> str:
    """What catalog's /metrics says after ``n`` rounds of traffic: each round 10 requests
    answered 200 and ``errors`` answered 500 (5 under 10 ms, 10 under 50 ms, all under 100 ms),
    besides probes and scrapes that must not count."""
    products = 'service="catalog",route="/products",method="GET"'
    probes = 'service="catalog",route="/readyz",method="GET"'
    scrapes = 'service="catalog",route="/internal/spans",method="GET"'
    requests = "agora_http_requests_total"
    bucket = "agora_http_request_duration_seconds_bucket"
    return f"""\
# HELP {requests} HTTP requests served.
# TYPE {requests} counter
{requests}{{{products},status="200"}} {10 * n}
{requests}{{{products},status="500"}} {errors * n}
{requests}{{{probes},status="200"}} {1000 * n}
{requests}{{{scrapes},status="200"}} {500 * n}
# HELP agora_http_request_duration_seconds Time to serve.
# TYPE agora_http_request_duration_seconds histogram
{bucket}{{{products},le="0.01"}} {5 * n}
{bucket}{{{products},le="0.05"}} {10 * n}
{bucket}{{{products},le="0.1"}} {11 * n}
{bucket}{{{products},le="+Inf"}} {11 * n}
agora_http_request_duration_seconds_count{{{products}}} {11 * n}
agora_http_request_duration_seconds_sum{{{products}}} {0.3 * n}
{bucket}{{{probes},le="0.01"}} 0
{bucket}{{{probes},le="0.05"}} 0
{bucket}{{{probes},le="0.1"}} 0
{bucket}{{{probes},le="+Inf"}} {1000 * n}
agora_http_request_duration_seconds_count{{{probes}}} {1000 * n}
agora_http_request_duration_seconds_sum{{{probes}}} {900 * n}
# HELP agora_client_requests_total Calls to other services.
# TYPE agora_client_requests_total counter
agora_client_requests_total{{service="catalog",peer="identity",outcome="2xx"}} {2 * n}
# HELP agora_messages_received_total Messages received.
# TYPE agora_messages_received_total counter
agora_messages_received_total{{service="catalog",source="orders",kind="event"}} {3 * n}
# HELP agora_service_info Which service, version and replica.
# TYPE agora_service_info gauge
agora_service_info{{service="catalog",version="1.4.2",replica="0"}} 1.0
# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.
# TYPE process_start_time_seconds gauge
process_start_time_seconds {time.time() - 3600}
"""


def scrape(n: int, at: float, **options: Any) -> Scrape:
    return Scrape(at, metrics.parse(exposition(n, **options)))


def test_rates_error_share_and_p99_come_from_the_difference_of_two_scrapes() -> None:
    traffic = metrics.traffic(scrape(3, at=100.0), scrape(5, at=104.0), "catalog")

    # 2 rounds of 11 requests in 4 s; probes and the console's reads left out.
    assert traffic.request_rate == pytest.approx(22 / 4)
    assert traffic.error_rate == pytest.approx(2 / 22)
    # 99 % of 22 is 21.78: past the 20 under 50 ms, in the 50..100 ms bucket, 78 % of the way.
    assert traffic.p99_seconds == pytest.approx(0.05 + 0.05 * (21.78 - 20) / (22 - 20))


def test_the_first_scrape_of_a_replica_has_no_rates() -> None:
    traffic = metrics.traffic(None, scrape(5, at=100.0), "catalog")

    assert (traffic.request_rate, traffic.error_rate, traffic.p99_seconds) == (None, None, None)


def test_a_counter_that_went_down_was_reset_and_all_of_it_is_new() -> None:
    # The replica restarted: 50 rounds before, 2 rounds since.
    traffic = metrics.traffic(scrape(50, at=100.0), scrape(2, at=102.0), "catalog")

    assert traffic.request_rate == pytest.approx(22 / 2)


def test_no_requests_between_scrapes_is_a_rate_of_zero_and_no_error_share() -> None:
    traffic = metrics.traffic(scrape(4, at=100.0), scrape(4, at=102.0), "catalog")

    assert traffic.request_rate == 0
    assert traffic.error_rate is None
    assert traffic.p99_seconds is None


def test_a_quantile_beyond_the_last_bound_is_the_last_bound() -> None:
    assert metrics.quantile(0.99, [(0.1, 1.0), (0.5, 2.0), (float("inf"), 100.0)]) == 0.5
    assert metrics.quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None


def test_version_and_start_come_from_the_service_info_and_process_metrics() -> None:
    version, started = metrics.info(scrape(1, at=0.0).samples, "catalog")

    assert version == "1.4.2"
    assert started == pytest.approx(time.time() - 3600, abs=5)


def test_calls_are_counted_by_the_caller_and_messages_by_the_receiver() -> None:
    flows = metrics.flows(scrape(1, at=10.0), scrape(3, at=12.0), "catalog")

    assert {(f.source, f.target, f.kind): f.rate for f in flows} == {
        ("catalog", "identity", "http"): pytest.approx(2.0),
        ("orders", "catalog", "message"): pytest.approx(3.0),
    }


def test_the_map_puts_the_gateway_left_and_what_depends_on_nothing_right() -> None:
    topology = Topology.model_validate(
        {
            "services": {
                "identity": {"module": "x"},
                "catalog": {"module": "x", "depends_on": ["identity"]},
                "inventory": {"module": "x", "depends_on": ["catalog"]},
                "orders": {"module": "x", "depends_on": ["inventory", "catalog"]},
            }
        }
    )
    flows = [
        Flow("gateway", "catalog", "http", 10, 2.5),
        Flow("gateway", "catalog#1", "http", 1, None),
        Flow("orders", "inventory", "message", 4, 0.0),
    ]

    drawn = servicemap.draw(topology, servicemap.combine(flows))

    x = {node.name: node.x for node in drawn.nodes}
    assert x["gateway"] < x["orders"] < x["inventory"] < x["catalog"] < x["identity"]
    edges = {(e.source, e.target, e.kind): e for e in drawn.edges}
    assert edges["gateway", "catalog", "http"].label == "2.5/s"
    assert edges["gateway", "catalog", "http"].active
    assert not edges["orders", "inventory", "message"].active  # seen, idle now: drawn faint
    assert "catalog#1" in x  # a peer the topology does not name gets a box of its own


def test_replicas_of_one_caller_add_up_on_one_edge() -> None:
    flows = servicemap.combine(
        [Flow("orders", "catalog", "http", 5, 1.0), Flow("orders", "catalog", "http", 7, 2.0)]
    )

    assert flows == [Flow("orders", "catalog", "http", 12, 3.0)]


# --- traces, from canned spans ------------------------------------------------------------------


def span(
    span_id: str,
    parent: str | None,
    service: str,
    name: str,
    start: float,
    ms: float,
    *,
    trace_id: str = TRACE,
    kind: str = "server",
    status: str = "ok",
    replica: int = 0,
    **attributes: Any,
) -> dict[str, Any]:
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_id": parent,
        "name": name,
        "kind": kind,
        "service": service,
        "replica": replica,
        "start": start,
        "duration_ms": ms,
        "status": status,
        "attributes": {key.replace("_", "."): value for key, value in attributes.items()},
    }


T0 = 1_700_000_000.0
# A checkout: the gateway forwards POST /orders; orders calls catalog, then sends ReserveStock,
# which inventory receives. Spans from three processes (the gateway, orders, inventory).
GATEWAY_SPANS = [
    span("a" * 16, None, "gateway", "POST /api/orders", T0, 120.0, http_route="/api/orders"),
]
ORDERS_SPANS = [
    span("b" * 16, "a" * 16, "orders", "POST /orders", T0 + 0.002, 110.0, http_route="/orders"),
    span("c" * 16, "b" * 16, "orders", "GET catalog", T0 + 0.010, 30.0, kind="client"),
    span(
        "d" * 16,
        "b" * 16,
        "orders",
        "publish ReserveStock",
        T0 + 0.050,
        2.0,
        kind="producer",
        agora_subject=ORDER,
        messaging_destination_name="agora.inventory.commands.ReserveStock.v1",
    ),
]
INVENTORY_SPANS = [
    span(
        "e" * 16,
        "d" * 16,
        "inventory",
        "receive ReserveStock",
        T0 + 0.060,
        20.0,
        kind="consumer",
        status="error",
        agora_subject=ORDER,
    ),
]
# The console's own polling: never listed among the traces.
POLLING = [
    span(
        "f" * 16,
        None,
        "gateway",
        "GET /console/api/services",
        T0 + 5,
        3.0,
        trace_id="1" * 32,
        http_route="/console/api/services",
    )
]


def test_spans_from_several_replicas_make_one_trace() -> None:
    spans = traces.parse_spans(
        [{"spans": GATEWAY_SPANS + POLLING}, {"spans": ORDERS_SPANS}, {"spans": INVENTORY_SPANS}]
    )

    (only,) = traces.latest_traces(spans, limit=10)

    assert only.trace_id == TRACE
    assert only.root == "gateway: POST /api/orders"
    assert only.services == ("gateway", "orders", "inventory")
    assert only.spans == 5
    assert only.error
    assert only.duration_ms == pytest.approx(120.0)


def test_the_waterfall_puts_each_span_under_its_parent_on_the_traces_time_line() -> None:
    spans = traces.parse_spans([{"spans": INVENTORY_SPANS + ORDERS_SPANS + GATEWAY_SPANS}])

    drawn = traces.waterfall(TRACE, spans)

    assert [(bar.span.service, bar.depth) for bar in drawn.bars] == [
        ("gateway", 0),
        ("orders", 1),
        ("orders", 2),
        ("orders", 2),
        ("inventory", 3),
    ]
    inventory = drawn.bars[-1]
    assert inventory.offset == pytest.approx(50.0)  # 60 ms into 120 ms
    assert inventory.width == pytest.approx(20 / 120 * 100, abs=0.01)


def test_an_order_is_found_by_the_subject_of_its_messages() -> None:
    spans = traces.parse_spans([{"spans": GATEWAY_SPANS + ORDERS_SPANS + INVENTORY_SPANS}])

    assert traces.trace_of_order(spans, ORDER) == TRACE
    assert traces.trace_of_order(spans, "another-order") is None


def test_an_orders_page_shown_before_its_first_message_is_not_taken_for_its_checkout() -> None:
    """The browser follows the checkout's redirect to the order's page at once: that page's
    trace names the order in its path, and starts before the checkout's first message."""
    page_view = span(
        "9" * 16,
        None,
        "gateway",
        "GET /orders/{order_id}",
        T0 + 0.030,
        15.0,
        trace_id="2" * 32,
        url_path=f"/orders/{ORDER}",
    )
    spans = traces.parse_spans([{"spans": [*GATEWAY_SPANS, *ORDERS_SPANS, page_view]}])

    assert traces.trace_of_order(spans, ORDER) == TRACE
    # With the checkout's spans gone, the page that showed the order is the best there is.
    assert traces.trace_of_order(traces.parse_spans([{"spans": [page_view]}]), ORDER) == "2" * 32


# --- the recent events --------------------------------------------------------------------------


def cloud_event(index: int, **data: Any) -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": f"event-{index}",
            "source": "orders",
            "type": "orders.OrderPlaced.v1",
            "time": "2025-01-01T00:00:00Z",
            "subject": f"order-{index}",
            "data": data,
        }
    )


def test_the_feed_keeps_the_envelope_and_a_few_identifying_fields_only() -> None:
    seen = seen_event(
        "agora.orders.events.OrderPlaced.v1",
        cloud_event(1, order_id="o-1", user_id="u-1", email="ada@example.com", total=4200),
    )

    assert (seen.type, seen.source, seen.aggregate, seen.id, seen.kind) == (
        "orders.OrderPlaced.v1",
        "orders",
        "order-1",
        "event-1",
        "events",
    )
    assert seen.summary == "order_id=o-1, user_id=u-1"


def test_a_message_that_is_not_a_cloud_event_is_still_listed() -> None:
    seen = seen_event("agora.payments.commands.Capture.v1", b"\x00not json")

    assert (seen.type, seen.source, seen.summary) == ("(not a CloudEvent)", "payments", "")


def test_the_feed_keeps_the_last_n_newest_first() -> None:
    feed = RecentEvents(size=3)
    for index in range(5):
        feed.record("agora.orders.events.OrderPlaced.v1", cloud_event(index))

    assert [event.id for event in feed.latest()] == ["event-4", "event-3", "event-2"]
    assert [event.id for event in feed.latest(2)] == ["event-4", "event-3"]


async def until(condition: Callable[[], bool], within: float = 15.0) -> None:
    async with asyncio.timeout(within):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


async def test_the_feed_follows_the_broker_once_however_often_it_reconnects(
    tmp_path: Path,
) -> None:
    with NatsServer(tmp_path / "nats") as server:
        broker = Broker(server.url, name="console-test")
        feed = RecentEvents()
        await feed.attach(broker)
        try:
            await connected(broker)
            # The broker goes away and comes back: every after-connect step runs again, and
            # nats-py restores the subscription by itself; it must not be made twice.
            server.stop()
            server.start()
            await until(lambda: broker.connected and broker.nc.stats["reconnects"] >= 1)
            await asyncio.sleep(0.3)
            await broker.nc.publish("agora.orders.events.OrderPlaced.v1", cloud_event(7))
            await broker.nc.publish("elsewhere.entirely", b"{}")
            await broker.nc.flush()
            await until(lambda: bool(feed.latest()))
            await asyncio.sleep(0.1)  # long enough for a second copy, were there one
            assert [event.id for event in feed.latest()] == ["event-7"]
        finally:
            await feed.detach()
            await broker.close()


# --- the console, over HTTP, in front of fake replicas ------------------------------------------


def service_metrics(service: str, n: int, extra: str = "") -> str:
    """A replica's /metrics at its ``n``-th scrape: per scrape 10 requests answered 200 and one
    500 (5 under 10 ms, 10 under 50 ms, all under 100 ms), and ``extra`` lines."""
    labels = f'service="{service}",route="/things",method="GET"'
    return f"""\
# TYPE agora_http_requests_total counter
agora_http_requests_total{{{labels},status="200"}} {10 * n}
agora_http_requests_total{{{labels},status="500"}} {n}
# TYPE agora_http_request_duration_seconds histogram
agora_http_request_duration_seconds_bucket{{{labels},le="0.01"}} {5 * n}
agora_http_request_duration_seconds_bucket{{{labels},le="0.05"}} {10 * n}
agora_http_request_duration_seconds_bucket{{{labels},le="0.1"}} {11 * n}
agora_http_request_duration_seconds_bucket{{{labels},le="+Inf"}} {11 * n}
agora_http_request_duration_seconds_count{{{labels}}} {11 * n}
agora_http_request_duration_seconds_sum{{{labels}}} {0.3 * n}
# TYPE agora_service_info gauge
agora_service_info{{service="{service}",version="2.0.0",replica="0"}} 1.0
# TYPE process_start_time_seconds gauge
process_start_time_seconds {time.time() - 7200}
{extra}"""


def checkout_spans(t0: float) -> dict[str, list[dict[str, Any]]]:
    """One checkout's spans as orders, catalog's second replica and inventory keep them."""
    return {
        "orders": [
            span("b" * 16, None, "orders", "POST /orders", t0, 110.0, http_route="/orders"),
            span("c" * 16, "b" * 16, "orders", "GET catalog", t0 + 0.01, 30.0, kind="client"),
            span(
                "d" * 16,
                "b" * 16,
                "orders",
                "publish ReserveStock",
                t0 + 0.05,
                2.0,
                kind="producer",
                agora_subject=ORDER,
            ),
        ],
        "catalog": [
            span(
                "9" * 16,
                "c" * 16,
                "catalog",
                "GET /products/batch",
                t0 + 0.012,
                20.0,
                replica=1,
                http_route="/products/batch",
            )
        ],
        "inventory": [
            span(
                "e" * 16,
                "d" * 16,
                "inventory",
                "receive ReserveStock",
                t0 + 0.06,
                20.0,
                kind="consumer",
                agora_subject=ORDER,
            )
        ],
    }


def log_line(service: str, event: str, **fields: Any) -> dict[str, Any]:
    return {
        "timestamp": "2025-01-01T00:00:00.000Z",
        "level": "info",
        "event": event,
        "service": service,
        "replica": 0,
        "trace_id": TRACE,
        "span_id": "b" * 16,
        "request_id": "r-1",
        **fields,
    }


OPERATOR = "the-operators-token"


@dataclass
class FakeReplica:
    """A replica answering what the console asks of a service."""

    service: str
    replica: int = 0
    extra_metrics: str = ""
    spans: list[dict[str, Any]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    outbox: dict[str, Any] = field(default_factory=lambda: {"outbox": True, "pending": 0})
    jwks: dict[str, Any] | None = None
    scrapes: int = 0
    upstream: Upstream | None = None

    def start(self) -> FakeReplica:
        self.upstream = Upstream(self.routes).start()
        return self

    @property
    def url(self) -> str:
        assert self.upstream is not None
        return self.upstream.url

    def stop(self) -> None:
        if self.upstream is not None:
            self.upstream.stop()
            self.upstream = None

    def routes(self, _: Upstream) -> list[web.RouteDef]:
        identity = {"service": self.service, "replica": self.replica}

        async def ready(_: web.Request) -> web.Response:
            checks = {"database": {"ok": True}}
            return web.json_response(
                {"status": "ready", **identity, "version": "2.0.0", "checks": checks}
            )

        async def prometheus(_: web.Request) -> web.Response:
            self.scrapes += 1
            text = service_metrics(self.service, self.scrapes, self.extra_metrics)
            return web.Response(text=text, content_type="text/plain")

        def kept(request: web.Request, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
            trace_id = request.query.get("trace_id")
            limit = int(request.query.get("limit", "200"))
            return [item for item in found if trace_id in (None, item["trace_id"])][:limit]

        def refused(request: web.Request) -> web.Response | None:
            # As a service's /internal/* does: the operator's token, or a 401.
            if request.headers.get("Authorization") == f"Bearer {OPERATOR}":
                return None
            return web.json_response({"status": 401}, status=401)

        async def spans(request: web.Request) -> web.Response:
            if (refusal := refused(request)) is not None:
                return refusal
            return web.json_response({**identity, "spans": kept(request, self.spans)})

        async def logs(request: web.Request) -> web.Response:
            if (refusal := refused(request)) is not None:
                return refusal
            return web.json_response({**identity, "logs": kept(request, self.logs)})

        async def outbox(request: web.Request) -> web.Response:
            if (refusal := refused(request)) is not None:
                return refusal
            return web.json_response({**identity, "oldest_pending_seconds": None, **self.outbox})

        async def jwks(_: web.Request) -> web.Response:
            return web.json_response(self.jwks or {"keys": []})

        async def products(_: web.Request) -> web.Response:
            return web.json_response({"items": []})

        return [
            web.get("/readyz", ready),
            web.get("/metrics", prometheus),
            web.get("/internal/spans", spans),
            web.get("/internal/logs", logs),
            web.get("/internal/outbox", outbox),
            web.get("/.well-known/jwks.json", jwks),
            web.get("/products", products),
        ]


def console_topology() -> Topology:
    return Topology.model_validate(
        {
            "services": {
                "identity": {"module": "identity.bootstrap"},
                "catalog": {
                    "module": "catalog.bootstrap",
                    "replicas": 2,
                    "depends_on": ["identity"],
                    "routes": [{"methods": ["GET"], "path": "/products", "auth": "public"}],
                },
                "inventory": {"module": "inventory.bootstrap", "depends_on": ["catalog"]},
                "orders": {
                    "module": "orders.bootstrap",
                    "depends_on": ["inventory", "catalog"],
                },
            }
        }
    )


@dataclass
class System:
    """The fakes by name (``catalog#1``) and the gateway in front of them."""

    replicas: dict[str, FakeReplica]
    settings: GatewaySettings
    keys: Keys
    served: Served | None = None
    # What the gateway is given besides its settings (Resources.provide), such as verify.Checks.
    provided: list[object] = field(default_factory=list)

    def __getitem__(self, key: str) -> FakeReplica:
        return self.replicas[key]

    def gateway(self, *, token: str | None = None) -> httpx.Client:
        """The gateway, started on first use; a client with ``token`` as its session."""
        if self.served is None:
            app = create_app(self.settings, topology=console_topology())
            for value in self.provided:
                app.state.resources.provide(value)
            self.served = Served(app)
            self.served.__enter__()
        client = httpx.Client(base_url=self.served.url, timeout=15)
        if token is not None:
            client.cookies.set("agora_session", token, domain="127.0.0.1", path="/")
        return client

    def admin(self) -> httpx.Client:
        return self.gateway(token=self.keys.token(roles=("customer", "admin")))


@pytest.fixture
def system(keys: Keys) -> Iterator[System]:
    t0 = time.time()
    spans = checkout_spans(t0)
    replicas = {
        "identity#0": FakeReplica("identity", jwks=keys.jwks()),
        "catalog#0": FakeReplica("catalog"),
        "catalog#1": FakeReplica("catalog", 1, spans=spans["catalog"]),
        "inventory#0": FakeReplica(
            "inventory",
            spans=spans["inventory"],
            logs=[log_line("inventory", "stock reserved", order_id=ORDER)],
            extra_metrics=(
                'agora_messages_received_total{service="inventory",source="orders",'
                'kind="command"} 0\n'
            ),
        ),
        "orders#0": FakeReplica(
            "orders",
            spans=spans["orders"],
            logs=[log_line("orders", "order placed", order_id=ORDER)],
            outbox={"outbox": True, "pending": 3, "oldest_pending_seconds": 12.5},
        ),
    }
    for replica in replicas.values():
        replica.start()
    urls: dict[str, list[str]] = {}
    for replica in replicas.values():
        urls.setdefault(replica.service, []).append(replica.url)
    settings = GatewaySettings(
        service_urls=urls,
        rate_limit=1e9,
        rate_burst=1_000_000,
        client_timeout=1.0,
        # A stopped replica refuses at once; this bounds an answer from a live one, which on a
        # busy machine (the fakes share the test's process) can take most of a second.
        health_timeout=5.0,
        nats_url="",
        operator_token=OPERATOR,
    )
    running = System(replicas, settings, keys)
    yield running
    if running.served is not None:
        running.served.__exit__()
    for replica in replicas.values():
        replica.stop()


class Elements(HTMLParser):
    """Every start tag of a page, with its attributes (values unescaped)."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[dict[str, str]] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append({"tag": tag, **{name: value or "" for name, value in attrs}})

    def having(self, **wanted: str) -> list[dict[str, str]]:
        attributes = {name.replace("_", "-"): value for name, value in wanted.items()}
        return [tag for tag in self.tags if all(tag.get(k) == v for k, v in attributes.items())]


def rows(page: httpx.Response) -> dict[str, str]:
    """``{"catalog#1": "up", ...}``: every row of the services table and its health."""
    found = Elements(page.text).having(data_testid="service-row")
    return {f"{row['data-service']}#{row['data-replica']}": row["data-health"] for row in found}


def csrf(page: httpx.Response) -> str:
    (meta,) = Elements(page.text).having(tag="meta", name="csrf-token")
    return meta["content"]


def json_rows(client: httpx.Client) -> dict[str, dict[str, Any]]:
    body = client.get("/console/api/services").json()
    return {f"{row['service']}#{row['replica']}": row for row in body["services"]}


def after_the_next_refresh() -> None:
    """Long enough for the console to scrape again rather than show its last scrape."""
    time.sleep(0.6)


@pytest.mark.parametrize(
    "path",
    [
        "/console",
        "/console/api/services",
        f"/console/traces/{TRACE}",
        f"/console/orders/{ORDER}/trace",
    ],
)
def test_an_anonymous_visitor_is_sent_to_log_in_first(system: System, path: str) -> None:
    reply = system.gateway().get(path)

    assert reply.status_code == 303
    assert reply.headers["location"] == "/login?" + str(httpx.QueryParams({"next": path}))


def test_a_customer_is_refused_the_console(system: System) -> None:
    client = system.gateway(token=system.keys.token(roles=("customer",)))

    for path in ("/console", "/console/api/services", "/console/api/events"):
        reply = client.get(path)
        assert reply.status_code == 403
        assert Elements(reply.text).having(data_testid="error-page")


def test_an_admin_sees_every_replica_and_one_that_stops_answering_turns_down(
    system: System,
) -> None:
    client = system.admin()

    page = client.get("/console")

    assert page.status_code == 200
    assert rows(page) == {
        "gateway#0": "up",
        "identity#0": "up",
        "catalog#0": "up",
        "catalog#1": "up",
        "inventory#0": "up",
        "orders#0": "up",
    }
    system["catalog#1"].stop()
    after_the_next_refresh()
    refreshed = json_rows(client)
    assert refreshed["catalog#1"]["health"] == "down"
    assert refreshed["catalog#0"]["health"] == "up"
    assert refreshed["catalog#1"]["shown"]["request_rate"] == "—"
    after_the_next_refresh()
    assert rows(client.get("/console"))["catalog#1"] == "down"


@pytest.mark.parametrize("prometheus_url", ["", "http://127.0.0.1:9090"])
def test_the_console_links_to_prometheus_only_when_one_scrapes_the_system(
    system: System, prometheus_url: str
) -> None:
    system.settings = system.settings.model_copy(update={"prometheus_url": prometheus_url})
    client = system.admin()

    pages = [client.get("/console"), client.get(f"/console/traces/{TRACE}")]

    for page in pages:
        assert page.status_code == 200
        link = f'<a href="{prometheus_url}" data-testid="prometheus-link"'
        assert (link in page.text) == bool(prometheus_url)
        assert ('data-testid="prometheus-link"' in page.text) == bool(prometheus_url)


def test_rates_error_share_and_p99_are_worked_out_from_two_refreshes(system: System) -> None:
    client = system.admin()

    first = json_rows(client)["catalog#0"]
    after_the_next_refresh()
    second = json_rows(client)["catalog#0"]

    assert first["request_rate"] is None
    assert first["shown"]["request_rate"] == "—"
    assert first["version"] == "2.0.0"
    assert first["uptime_seconds"] == pytest.approx(7200, abs=60)
    # 11 requests a scrape, one of them a 500; p99 in the 50..100 ms bucket, 89 % of the way.
    assert second["request_rate"] > 0
    assert second["error_rate"] == pytest.approx(1 / 11)
    assert second["shown"]["error_rate"] == "9.1 %"
    assert second["p99_ms"] == pytest.approx(50 + 50 * (0.99 * 11 - 10))


def test_the_map_draws_calls_and_messages_with_their_rates(system: System) -> None:
    client = system.admin()
    client.get("/console/api/map")
    # Between two refreshes: six commands from orders reach inventory, and a call goes through
    # the gateway to catalog.
    system[
        "inventory#0"
    ].extra_metrics = (
        'agora_messages_received_total{service="inventory",source="orders",kind="command"} 6\n'
    )
    assert client.get("/api/catalog/products").status_code == 200
    after_the_next_refresh()

    page = client.get("/console")

    elements = Elements(page.text)
    (drawn,) = elements.having(data_testid="service-map")
    assert drawn["tag"] == "svg"
    (call,) = elements.having(data_edge="gateway->catalog")
    (message,) = elements.having(data_edge="orders->inventory")
    assert call["data-kind"] == "http"
    assert float(call["data-rate"]) > 0
    assert message["data-kind"] == "message"
    assert float(message["data-rate"]) > 0
    body = client.get("/console/api/map").json()
    assert {node["name"] for node in body["nodes"]} == {
        "gateway",
        "identity",
        "catalog",
        "inventory",
        "orders",
    }


def test_the_latest_traces_join_the_spans_of_several_replicas(system: System) -> None:
    client = system.admin()

    body = client.get("/console/api/traces", params={"limit": 200}).json()

    (checkout,) = [trace for trace in body["traces"] if trace["trace_id"] == TRACE]
    assert checkout["spans"] == 5
    assert checkout["services"] == ["orders", "catalog", "inventory"]
    assert checkout["root"] == "orders: POST /orders"
    assert checkout["duration_ms"] == pytest.approx(110.0)
    assert not any(trace["root"].startswith("gateway: GET /console") for trace in body["traces"])
    page = client.get("/console")
    assert Elements(page.text).having(data_testid="trace-row", data_trace=TRACE)


def test_a_traces_waterfall_shows_every_services_spans_and_its_logs(system: System) -> None:
    client = system.admin()

    page = client.get(f"/console/traces/{TRACE}")

    assert page.status_code == 200
    elements = Elements(page.text)
    assert elements.having(data_testid="waterfall")
    spans = elements.having(data_testid="span")
    assert [s["data-service"] for s in spans] == [
        "orders",
        "orders",
        "catalog",
        "orders",
        "inventory",
    ]
    lines = elements.having(data_testid="log-line")
    assert {line["data-service"] for line in lines} == {"orders", "inventory"}
    text = unescape(page.text)
    assert "order placed" in text
    assert "stock reserved" in text
    assert f"order_id={ORDER}" in text


def test_an_orders_trace_is_found_by_its_id(system: System) -> None:
    client = system.admin()

    reply = client.get(f"/console/orders/{ORDER}/trace")

    assert reply.status_code == 303
    assert reply.headers["location"] == f"/console/traces/{TRACE}"
    form = client.get("/console/orders/trace", params={"order_id": ORDER})
    assert form.headers["location"] == f"/console/orders/{ORDER}/trace"


def test_an_order_whose_spans_are_gone_says_so(system: System) -> None:
    reply = system.admin().get("/console/orders/no-such-order/trace")

    assert reply.status_code == 404
    assert "kept in memory" in unescape(reply.text)


@pytest.mark.parametrize("trace_id", ["0" * 32, "not-a-trace-id"])
def test_an_unknown_trace_is_a_not_found_page(system: System, trace_id: str) -> None:
    reply = system.admin().get(f"/console/traces/{trace_id}")

    assert reply.status_code == 404
    assert Elements(reply.text).having(data_testid="error-page")
    assert "Traceback" not in reply.text


def test_the_outboxes_show_each_replicas_backlog(system: System) -> None:
    client = system.admin()

    body = client.get("/console/api/outbox").json()

    by_replica = {f"{row['service']}#{row['replica']}": row for row in body["outboxes"]}
    assert by_replica["orders#0"]["pending"] == 3
    assert by_replica["orders#0"]["oldest_pending_seconds"] == 12.5
    assert by_replica["orders#0"]["shown"]["state"] == "3 pending"
    assert by_replica["gateway#0"]["shown"]["state"] == "no outbox"
    page = client.get("/console")
    assert Elements(page.text).having(data_testid="outbox-row", data_service="orders")


def test_without_a_broker_the_console_says_so(system: System) -> None:
    client = system.admin()

    letters = client.get("/console/api/dead-letters").json()
    events = client.get("/console/api/events").json()

    assert letters == {
        "broker": {"state": "unconfigured", "detail": "No broker is configured."},
        "dead_letters": [],
    }
    assert events["subscribed"] is False
    assert events["events"] == []


def test_verify_runs_the_checks_as_the_admin_and_shows_each_violation(system: System) -> None:
    asked: list[tuple[str, str]] = []

    async def checks(url: str, token: str) -> Report:
        asked.append((url, token))
        broken = Violation("money", "order o-1", "CONFIRMED for 4200, but captured 0")
        return Report((broken,), (), {"orders": 1})

    system.provided.append(verify.Checks(checks))
    token = system.keys.token(roles=("admin",))
    client = system.gateway(token=token)
    page = client.get("/console")

    refused = client.post("/console/verify", data={"csrf_token": "forged"})
    reply = client.post("/console/verify", data={"csrf_token": csrf(page)})

    assert refused.status_code == 403
    assert reply.status_code == 200
    (result,) = Elements(reply.text).having(data_testid="verify-result")
    assert result["data-ok"] == "false"
    (violation,) = Elements(reply.text).having(data_testid="violation")
    assert violation["data-check"] == "money"
    assert "CONFIRMED for 4200, but captured 0" in unescape(reply.text)
    assert asked == [(str(client.base_url).rstrip("/"), token)]


def test_verify_shows_what_it_did_not_judge_and_why(system: System) -> None:
    async def checks(url: str, token: str) -> Report:
        note = "shipping is not part of this system: its checks were skipped"
        return Report((), (), {"orders": 2}, awaiting_shipment=("o-2",), notes=(note,))

    system.provided.append(verify.Checks(checks))
    client = system.admin()

    reply = client.post("/console/verify", data={"csrf_token": csrf(client.get("/console"))})

    assert reply.status_code == 200
    (result,) = Elements(reply.text).having(data_testid="verify-result")
    assert result["data-ok"] == "true"
    assert len(Elements(reply.text).having(data_testid="verify-note")) == 1
    assert "its checks were skipped" in unescape(reply.text)
    assert "1 confirmed order still within their grace for a shipment" in unescape(reply.text)


def test_verify_says_when_the_system_could_not_be_read(system: System) -> None:
    async def unreadable(url: str, token: str) -> Report:
        raise ReadFailed("GET /api/orders answered 503")

    system.provided.append(verify.Checks(unreadable))
    client = system.admin()

    reply = client.post("/console/verify", data={"csrf_token": csrf(client.get("/console"))})

    assert reply.status_code == 503
    assert "GET /api/orders answered 503" in unescape(reply.text)


async def test_verify_reads_through_the_gateway_with_the_admins_token() -> None:
    """The real reading: every listing the checker needs, asked with the admin's own token."""
    seen: list[str | None] = []

    async def empty(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"items": [], "next_cursor": None})

    async def services(request: web.Request) -> web.Response:
        return web.json_response({"services": [{"name": "orders"}, {"name": "shipping"}]})

    app = web.Application()
    # The topology's services, asked once: shipping among them, so its shipments are read too.
    app.router.add_get("/api", services)
    for path in (
        "/api/shipments",
        "/api/orders",
        "/api/inventory/stock",
        "/api/inventory/reservations",
        "/api/payments",
        "/api/payments/ledger/movements",
        "/api/identity/users",
        "/api/notifications/all",
    ):
        app.router.add_get(path, empty)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        report = await verify.verify_as(f"http://127.0.0.1:{port}", "the-admins-token")
    finally:
        await runner.cleanup()

    assert report.ok
    # Every listing, read twice (until two readings agree), each with the admin's token.
    assert len(seen) == 16
    assert set(seen) == {"Bearer the-admins-token"}


# --- dead letters and events against a real broker ----------------------------------------------


def dead_letter(server: NatsServer) -> None:
    """Orders' stream, and in it one dead letter of the event ``dead-1``."""

    async def make() -> None:
        broker = Broker(server.url, name="console-test-setup")
        try:
            await connected(broker)
            await broker.ensure_stream("orders")
            await broker.js.publish(
                "agora.orders.dead.notifications__orders",
                cloud_event(1, order_id="o-1"),
                headers={
                    "Agora-Event-Id": "dead-1",
                    "Agora-Original-Subject": "agora.orders.events.OrderPlaced.v1",
                    "Agora-Consumer": "notifications__orders",
                    "Agora-Handler": "notifications.entrypoints.on_order_placed",
                    "Agora-Error": "RuntimeError('smtp down')",
                    "Agora-Delivered": "5",
                },
            )
        finally:
            await broker.close()

    asyncio.run(make())


def test_dead_letters_are_listed_and_replayed_and_the_feed_shows_the_traffic(
    system: System, tmp_path: Path
) -> None:
    with NatsServer(tmp_path / "nats") as server:
        system.settings = system.settings.model_copy(update={"nats_url": server.url})
        client = system.admin()
        found_within(
            lambda: client.get("/console/api/events").json()["subscribed"] or None,
            "the console subscribed to the events",
            within=15,
        )
        dead_letter(server)

        page = client.get("/console")

        (row,) = Elements(page.text).having(data_testid="dead-letter")
        assert row["data-event-id"] == "dead-1"
        assert "smtp down" in unescape(page.text)
        reply = client.post("/console/dead-letters/dead-1/replay", data={"csrf_token": csrf(page)})
        assert reply.status_code == 303
        assert reply.headers["location"] == "/console?replayed=dead-1#dead-letters"
        after = client.get("/console/api/dead-letters").json()
        assert after["broker"]["state"] == "connected"
        assert after["dead_letters"] == []
        again = client.post("/console/dead-letters/dead-1/replay", data={"csrf_token": csrf(page)})
        assert again.status_code == 404
        # The feed saw the dead letter go by, then the event sent back to its subject.
        feed = found_within(
            lambda: (
                events
                if len(events := client.get("/console/api/events").json()["events"]) >= 2
                else None
            ),
            "two events in the feed",
        )
        assert [(e["kind"], e["id"]) for e in feed[:2]] == [
            ("events", "event-1"),
            ("dead", "event-1"),
        ]
        assert feed[0]["subject"] == "agora.orders.events.OrderPlaced.v1"
        assert feed[0]["summary"] == "order_id=o-1"
        # The gateway stops before its broker does, as it would in a deployment.
        if system.served is not None:
            system.served.__exit__()
            system.served = None
