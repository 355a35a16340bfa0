"""Traces leave the system over OTLP/HTTP, as a collector (Jaeger, Tempo, the OpenTelemetry
Collector) receives them: `agora up` with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, one checkout, and a
receiver of the test's own that decodes what each process sends.

One checkout arrives as one trace, across the gateway, the services it called and those its
messages reached, and it holds the spans of the same services as each process keeps for the
console (``GET /internal/spans``): two export paths, one trace. In both shapes (ADR 53): with the
shop in one process, each span still reaches the collector as its own service's.

The system runs with ``agora up --trace-statements`` (ADR 41): the console's view of a checkout's
trace then shows the database statements of every service it touched, shipping's included.
"""

from __future__ import annotations

import gzip
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from shopping import APPROVED, Shop, Shopper, admin_env, checkout_trace, open_console

from agora.auth import OPERATOR_TOKEN_FILE
from agora.topology import find_topology_file, load_topology
from agora_tools.harness import RunningSystem, wait_for
from agora_tools.testing import http_receiver

pytest_plugins = ["shopping"]  # the fixture shop
pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

# nats, identity, catalog, inventory, payments, orders, cart, notifications, shipping, the gateway
PROCESSES = 10


class Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver: decodes each export and keeps its spans."""

    spans: ClassVar[list[dict[str, Any]]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_POST(self) -> None:
        body = self._body()
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        received = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        {
                            "service": resource.get("service.name"),
                            "trace_id": span.trace_id.hex(),
                            "name": span.name,
                            "attributes": _attributes(span.attributes),
                        }
                    )
        with self.lock:
            self.spans.extend(received)
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _body(self) -> bytes:
        """The export, sent with a length (the Python exporter) or in chunks (Node's), and
        gzipped when the exporter says so, as a collector takes it."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while size := int(self.rfile.readline().strip().split(b";")[0], 16):
                body += self.rfile.read(size)
                self.rfile.readline()  # the CRLF after each chunk
            self.rfile.readline()  # the CRLF after the last, empty one
        else:
            body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        return body

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @classmethod
    def received(cls) -> list[dict[str, Any]]:
        with cls.lock:
            return list(cls.spans)


def _attributes(pairs: Any) -> dict[str, Any]:
    """OTLP's key/value list as a dict of plain values."""
    values: dict[str, Any] = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        values[pair.key] = getattr(pair.value, kind) if kind else None
    return values


@pytest.fixture(scope="module")
def receiver() -> Iterator[str]:
    with http_receiver(Receiver) as url:
        yield url


@pytest.fixture(scope="module")
def system(
    receiver: str, tmp_path_factory: pytest.TempPathFactory, shape: tuple[str, ...]
) -> Iterator[RunningSystem]:
    env = {
        **os.environ,
        **admin_env(),
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver,
        # The batch processor sends every 200 ms instead of every 5 s.
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    directory = tmp_path_factory.mktemp("otlp") / "shop"
    with RunningSystem(directory, "--trace-statements", *shape, env=env) as running:
        running.wait_healthy(count=PROCESSES)
        yield running


def kept_by_processes(system: RunningSystem, trace_id: str) -> set[str]:
    """The services whose processes keep spans of ``trace_id`` (what the console reads)."""
    token = (system.directory / ".agora" / "secrets" / OPERATOR_TOKEN_FILE).read_text().strip()
    services = set()
    for process in system.status():
        if not process.get("port") or process["service"] == "nats":
            continue
        answer = httpx.get(
            f"http://127.0.0.1:{process['port']}/internal/spans",
            params={"trace_id": trace_id},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert answer.status_code == 200, f"{process['service']}: {answer.text}"
        if answer.json():
            services.add(process["service"])
    return services


def a_confirmed_order(shop: Shop) -> tuple[Shopper, str]:
    """A new shopper's order of one product, checked out and CONFIRMED."""
    sku = shop.products(5)[-1]["sku"]
    shopper = shop.shopper()
    answer = shopper.place([{"sku": sku, "quantity": 1}], APPROVED)
    assert answer.status_code == 202, answer.text
    order_id: str = answer.json()["id"]
    assert shopper.wait_until_terminal(order_id)["status"] == "CONFIRMED"
    return shopper, order_id


def test_a_checkout_reaches_the_collector_as_one_trace_across_every_service_it_touched(
    system: RunningSystem, shop: Shop
) -> None:
    _, order_id = a_confirmed_order(shop)

    # The spans that carried the order's messages name it: they are of the checkout's trace.
    def checkout_traces() -> set[str] | None:
        carried = {
            span["trace_id"]
            for span in Receiver.received()
            if span["attributes"].get("agora.subject") == order_id
        }
        return carried or None

    traces = wait_for("the order's spans at the receiver", checkout_traces, timeout=60)
    assert len(traces) == 1, f"the checkout arrived as {len(traces)} traces"
    (trace_id,) = traces
    touched = kept_by_processes(system, trace_id)
    # At least the checkout's path: the edge, the order, its prices, its stock, its payment and
    # the shopper's message.
    assert {"gateway", "orders", "catalog", "inventory", "payments", "notifications"} <= touched

    def exported() -> set[str] | None:
        services = {s["service"] for s in Receiver.received() if s["trace_id"] == trace_id}
        return services if services >= touched else None

    services = wait_for("every touched service's spans at the receiver", exported, timeout=60)
    assert services == touched
    names = {s["name"] for s in Receiver.received() if s["trace_id"] == trace_id}
    assert any("/api/orders" in name for name in names), names


# -- the console's view, with statements traced ------------------------------------------------


@pytest.fixture(scope="module")
def console(system: RunningSystem) -> Iterator[httpx.Client]:
    with open_console(system) as browser:
        yield browser


def console_trace(console: httpx.Client, order_id: str) -> list[dict[str, Any]]:
    """The spans of the order's checkout, as the console's trace page shows them."""
    trace = checkout_trace(console, order_id)
    assert trace is not None, f"no service keeps a span of order {order_id}'s checkout"
    spans: list[dict[str, Any]] = trace["spans"]
    return spans


def test_a_checkouts_trace_in_the_console_shows_statements_in_every_service_it_touched(
    system: RunningSystem, shop: Shop, console: httpx.Client
) -> None:
    shopper, order_id = a_confirmed_order(shop)
    # Every service keeps a store of its own; the gateway, which keeps none, runs no statement.
    # (The topology `agora up` found from the system's directory.)
    stores = set(load_topology(find_topology_file(system.directory)).services)

    def with_statements(spans: list[dict[str, Any]]) -> dict[str, set[str]]:
        """The statements' database systems, by service, of the trace's services that keep a
        store."""
        found: dict[str, set[str]] = {s["service"]: set() for s in spans if s["service"] in stores}
        for span in spans:
            system_name = span["attributes"].get("db.system")
            if span["kind"] == "client" and system_name and span["service"] in found:
                found[span["service"]].add(system_name)
        return found

    def every_service_ran_statements() -> dict[str, set[str]] | None:
        found = with_statements(console_trace(console, order_id))
        # The messages reach shipping, cart and notifications after the order is confirmed.
        arrived = found.keys() >= {"orders", "catalog", "inventory", "payments", "notifications"}
        return found if arrived and "shipping" in found and all(found.values()) else None

    found = wait_for(
        "a statement of every service in the checkout's trace",
        every_service_ran_statements,
        timeout=60,
    )

    # Embedded, every service is on SQLite (shipping's through better-sqlite3).
    assert {service: {"sqlite"} for service in found} == found
    spans = console_trace(console, order_id)
    statements = [span for span in spans if span["attributes"].get("db.statement")]
    ids = {span["span_id"] for span in spans}
    # Each under the request or message that ran it, shown by its SQL, with no values in it.
    assert all(span["parent_id"] in ids for span in statements)
    assert all(
        span["name"] == " ".join(str(span["attributes"]["db.statement"]).split())[:120]
        or span["name"].endswith("…")
        for span in statements
    )
    shown = repr(statements)
    assert shopper.email not in shown
    assert APPROVED not in shown
    assert APPROVED.replace(" ", "") not in shown
