"""The gateway forwards the services' public routes, and nothing else, keeping what they answer."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest
from aiohttp import web

from agora.logs import recent_logs
from agora.topology import Topology
from agora_tools.testing import assert_problem, found_within
from gateway.bootstrap import create_app
from gateway.settings import GatewaySettings

from .conftest import (
    Keys,
    Seen,
    Upstream,
    catalog_routes,
    identity_routes,
    sent_on,
)

if TYPE_CHECKING:
    from .conftest import StartGateway

MIB = 1024 * 1024


def header(seen: Seen, name: str) -> list[str]:
    """Every value of header ``name`` the service received."""
    return [value for key, value in seen.headers.items() if key.lower() == name.lower()]


def seen_by(upstream: Upstream, request_id: str) -> list[str]:
    return [s.path_qs for s in upstream.seen if s.headers.get("X-Request-Id") == request_id]


def test_a_public_route_is_forwarded_keeping_status_headers_and_body(
    gateway: httpx.Client, catalog: Upstream
) -> None:
    reply = gateway.get("/api/catalog/products/tea-1")

    assert reply.status_code == 200
    assert reply.json() == {"sku": "tea-1", "name": "Teapot"}
    assert reply.headers["x-catalog-version"] == "7"
    assert reply.headers["cache-control"] == "max-age=30"
    assert reply.headers["content-type"].startswith("application/json")
    assert seen_by(catalog, reply.headers["x-request-id"]) == ["/products/tea-1"]


def test_a_service_mounted_at_api_gets_its_own_paths_and_nothing_else(
    gateway: httpx.Client, catalog: Upstream
) -> None:
    reply = gateway.get("/api/orders/o-17?fields=status")
    internal = gateway.get("/api/orders/o-17/metrics")
    not_its_own = gateway.get("/api/metrics")

    assert seen_by(catalog, reply.headers["x-request-id"]) == ["/orders/o-17?fields=status"]
    assert internal.status_code == 404
    assert seen_by(catalog, internal.headers["x-request-id"]) == []
    assert not_its_own.status_code == 404
    # The other services keep their own prefixes beside it.
    assert gateway.get("/api/catalog/products/tea-1").status_code == 200


def test_the_query_string_is_passed_on_as_sent(gateway: httpx.Client, catalog: Upstream) -> None:
    reply = gateway.get("/api/catalog/products?category=tea&q=green%20tea&limit=5")

    assert reply.status_code == 200
    assert reply.json()["query"] == "category=tea&q=green%20tea&limit=5"
    assert seen_by(catalog, reply.headers["x-request-id"]) == [
        "/products?category=tea&q=green%20tea&limit=5"
    ]


def test_a_services_error_answer_comes_back_unchanged(gateway: httpx.Client) -> None:
    reply = gateway.get("/api/catalog/products/missing")

    assert reply.status_code == 404
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert reply.json()["title"] == "Product not found"


def test_hop_by_hop_headers_are_dropped_both_ways(gateway: httpx.Client, catalog: Upstream) -> None:
    reply = gateway.get(
        "/api/catalog/products/tea-2",
        headers={"te": "trailers", "proxy-authorization": "Basic eDp5", "x-shop": "north"},
    )

    assert "proxy-authenticate" not in reply.headers
    assert "keep-alive" not in reply.headers
    (seen,) = [
        s for s in catalog.seen if s.headers.get("X-Request-Id") == reply.headers["x-request-id"]
    ]
    assert seen.headers["X-Shop"] == "north"
    assert "Te" not in seen.headers
    assert "Proxy-Authorization" not in seen.headers


def test_the_service_learns_who_asked_and_which_request_it_is(
    gateway: httpx.Client, catalog: Upstream
) -> None:
    reply = gateway.get("/api/catalog/products/tea-3", headers={"x-request-id": "order-flow-42"})

    assert reply.headers["x-request-id"] == "order-flow-42"
    (seen,) = [s for s in catalog.seen if s.headers.get("X-Request-Id") == "order-flow-42"]
    assert seen.headers["X-Forwarded-For"] == "127.0.0.1"
    assert seen.headers["X-Forwarded-Proto"] == "http"
    assert seen.headers["X-Forwarded-Host"] == gateway.base_url.netloc.decode()


@pytest.mark.parametrize(
    ("settings", "forwarded_for", "client", "scheme"),
    [
        pytest.param(
            {}, "203.0.113.9", "127.0.0.1", "http", id="a-client-cannot-name-itself-to-a-service"
        ),
        # The left-most entry is the client's own word; the proxy appended what it saw.
        pytest.param(
            {"trusted_proxies": "127.0.0.1"},
            "10.9.9.9, 203.0.113.9",
            "203.0.113.9",
            "https",
            id="behind-a-trusted-proxy-the-client-the-proxy-named",
        ),
    ],
)
def test_the_service_learns_the_client_and_scheme_from_forwarded_headers_only_of_a_trusted_proxy(
    start_gateway: StartGateway,
    catalog: Upstream,
    settings: dict[str, str],
    forwarded_for: str,
    client: str,
    scheme: str,
) -> None:
    gateway = start_gateway(**settings)

    reply = gateway.get(
        "/api/catalog/products/tea-3",
        headers={"x-forwarded-for": forwarded_for, "x-forwarded-proto": "https"},
    )

    (seen,) = sent_on(catalog, reply.headers["x-request-id"])
    assert header(seen, "X-Forwarded-For") == [client]
    assert header(seen, "X-Forwarded-Proto") == [scheme]


@pytest.mark.parametrize(
    "path",
    [
        "/api/catalog/metrics",
        "/api/catalog/readyz",
        "/api/catalog/livez",
        "/api/catalog/openapi.json",
        "/api/catalog",
        "/api/catalog/",
        "/api/catalog/products/tea-1/secret",
        "/api/catalog/products/%2e%2e/metrics",
        "/api/catalog/products/%2e%2e",
        "/api/nowhere/products",
    ],
)
def test_internal_endpoints_and_undeclared_paths_are_not_forwarded(
    gateway: httpx.Client, catalog: Upstream, path: str
) -> None:
    reply = gateway.get(path)

    assert_problem(reply, 404)
    assert seen_by(catalog, reply.headers["x-request-id"]) == []


def test_a_declared_path_with_another_method_is_405_naming_the_allowed_ones(
    gateway: httpx.Client, catalog: Upstream
) -> None:
    reply = gateway.delete("/api/catalog/products/tea-1")

    assert_problem(reply, 405)
    assert reply.headers["allow"] == "GET, HEAD, PATCH"
    assert seen_by(catalog, reply.headers["x-request-id"]) == []


def test_a_request_body_reaches_the_service_whole(gateway: httpx.Client, catalog: Upstream) -> None:
    body = bytes(range(256)) * 1000

    reply = gateway.post("/api/catalog/uploads", content=body)

    assert reply.status_code == 201
    assert reply.json() == {"received": len(body)}
    (seen,) = [
        s for s in catalog.seen if s.headers.get("X-Request-Id") == reply.headers["x-request-id"]
    ]
    assert seen.body == body


def test_a_chunked_request_body_under_the_cap_reaches_the_service_whole(
    gateway: httpx.Client,
) -> None:
    def pieces() -> Iterator[bytes]:
        for _ in range(10):
            yield b"x" * 65536

    reply = gateway.post("/api/catalog/uploads", content=pieces())

    assert reply.status_code == 201
    assert reply.json() == {"received": 10 * 65536}


def test_a_large_answer_of_unknown_length_is_streamed_through_intact(
    gateway: httpx.Client,
) -> None:
    with gateway.stream("GET", "/api/catalog/products/big") as reply:
        body = b"".join(reply.iter_bytes())

    assert reply.status_code == 200
    assert body == b"".join(bytes([index]) * 65536 for index in range(48))


def test_a_body_over_one_mib_by_content_length_is_refused_with_413(
    gateway: httpx.Client, catalog: Upstream
) -> None:
    reply = gateway.post("/api/catalog/uploads", content=b"x" * (MIB + 1))

    assert_problem(reply, 413)
    assert seen_by(catalog, reply.headers["x-request-id"]) == []


def test_a_chunked_body_growing_over_one_mib_is_refused_with_413(
    gateway: httpx.Client, catalog: Upstream
) -> None:
    def pieces() -> Iterator[bytes]:
        for _ in range(17):
            yield b"x" * 65536

    reply = gateway.post("/api/catalog/uploads", content=pieces())

    assert_problem(reply, 413)
    assert seen_by(catalog, reply.headers["x-request-id"]) == []


def test_a_service_that_is_down_is_a_503_problem(gateway: httpx.Client) -> None:
    reply = gateway.get("/api/inventory/stock/tea-1")

    assert_problem(reply, 503)
    assert "inventory" in reply.json()["detail"]


def test_a_service_that_hangs_is_a_504_problem(start_gateway: StartGateway) -> None:
    gateway = start_gateway(client_timeout=0.3)

    reply = gateway.get("/api/catalog/products/slow")

    assert_problem(reply, 504)


@pytest.fixture
def slow_logins(keys: Keys) -> Iterator[Upstream]:
    """An identity whose logins never answer (its argon2id work queued behind a flood), while
    its key set and /me still do."""

    def routes(upstream: Upstream) -> list[web.RouteDef]:
        async def token(_: web.Request) -> web.Response:
            await asyncio.sleep(60)  # cancelled when the server stops
            return web.json_response({})

        others = [route for route in identity_routes(keys)(upstream) if route.path != "/token"]
        return [*others, web.post("/token", token)]

    upstream = Upstream(routes).start()
    yield upstream
    upstream.stop()


def test_a_login_route_that_keeps_timing_out_leaves_me_served(
    start_gateway: StartGateway, slow_logins: Upstream, keys: Keys
) -> None:
    gateway = start_gateway(replicas={"identity": [slow_logins.url]}, client_timeout=0.3)
    me = {"authorization": f"Bearer {keys.token()}"}
    assert gateway.get("/api/identity/me", headers=me).status_code == 200

    logins = [
        gateway.post("/api/identity/token", json={"email": f"{n}@example.com", "password": "x"})
        for n in range(6)
    ]
    answers = [gateway.get("/api/identity/me", headers=me).status_code for _ in range(5)]

    # Five timeouts open the login route's breaker: the sixth is refused at once.
    assert [login.status_code for login in logins] == [504] * 5 + [503]
    assert len(slow_logins.requests_to("/token")) == 5
    assert answers == [200] * 5


def test_the_trace_travels_into_the_service_with_the_id_the_gateway_logged(
    gateway: httpx.Client, catalog: Upstream
) -> None:
    reply = gateway.get("/api/catalog/products/traced-1")

    (seen,) = [s for s in catalog.seen if s.path_qs == "/products/traced-1"]
    assert seen.headers["X-Request-Id"] == reply.headers["x-request-id"]
    _version, trace_id, _span_id, _flags = seen.headers["traceparent"].split("-")
    # The lines the process wrote, as the console reads them. The access line is written once
    # the answer has gone out, so it may trail the answer by a moment.
    access = found_within(
        lambda: next(
            (
                line
                for line in recent_logs().find(service="gateway")
                if line.get("event") == "request"
                and line.get("path") == "/api/catalog/products/traced-1"
            ),
            None,
        ),
        "the request's access line",
    )
    assert access["service"] == "gateway"
    assert access["request_id"] == reply.headers["x-request-id"]
    assert access["trace_id"] == trace_id
    assert access["route"] == "/api/catalog/products/{sku}"


def test_metrics_count_forwarded_requests_by_route_template_not_by_path(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway(operator_token=OPERATOR)
    gateway.get("/api/catalog/products/counted-1")
    gateway.get("/api/catalog/products/counted-2")
    gateway.get("/api/catalog/no-such-thing")

    metrics = gateway.get("/metrics", headers={"authorization": f"Bearer {OPERATOR}"}).text

    assert 'route="/api/catalog/products/{sku}",service="gateway",status="200"' in metrics
    assert 'route="/api/{path}",service="gateway",status="404"' in metrics
    assert "counted-1" not in metrics


def test_requests_are_spread_over_a_services_replicas(
    start_gateway: StartGateway, catalog: Upstream
) -> None:
    second = Upstream(catalog_routes).start()
    try:
        gateway = start_gateway(replicas={"catalog": [catalog.url, second.url]})

        ids = [
            gateway.get(f"/api/catalog/products/spread-{n}").headers["x-request-id"]
            for n in range(4)
        ]

        assert all(reply_id for reply_id in ids)
        assert len([i for i in ids if seen_by(catalog, i)]) == 2
        assert len([i for i in ids if seen_by(second, i)]) == 2
    finally:
        second.stop()


OPERATOR = "the-operators-token"
FROM_ITSELF = ("10.0.0.2", 40000)  # the address the gateway listens on below
FROM_LOOPBACK = ("127.0.0.1", 40000)  # a reverse proxy on the same host


async def gateway_answer(
    topology: Topology, client: tuple[str, int], path: str, headers: dict[str, str]
) -> httpx.Response:
    app = create_app(GatewaySettings(operator_token=OPERATOR), topology=topology)
    transport = httpx.ASGITransport(app=app, client=client)
    async with httpx.AsyncClient(transport=transport, base_url="http://10.0.0.2:8000") as http:
        return await http.get(path, headers=headers)


@pytest.mark.parametrize("path", ["/internal/spans", "/internal/logs", "/metrics"])
@pytest.mark.parametrize("client", [FROM_ITSELF, FROM_LOOPBACK], ids=["itself", "loopback"])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-forwarded-for": "127.0.0.1"},
        {"authorization": "Bearer a-guess", "x-forwarded-for": "10.0.0.2"},
    ],
    ids=["no-token", "forwarded-for-loopback", "wrong-token"],
)
async def test_the_gateways_spans_logs_and_metrics_need_the_operators_token_from_anywhere(
    topology: Topology, path: str, client: tuple[str, int], headers: dict[str, str]
) -> None:
    """Its spans and log lines hold every shopper's requests, and its port is the public door:
    where a request comes from proves nothing behind a proxy on the same host."""
    answer = await gateway_answer(topology, client, path, headers)

    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("client", [("203.0.113.9", 40000), FROM_ITSELF])
async def test_the_operators_token_reads_the_gateways_spans_and_metrics(
    topology: Topology, client: tuple[str, int]
) -> None:
    sent = {"authorization": f"Bearer {OPERATOR}"}

    spans = await gateway_answer(topology, client, "/internal/spans", sent)
    metrics = await gateway_answer(topology, client, "/metrics", sent)

    assert spans.status_code == 200
    assert spans.json()["service"] == "gateway"
    assert metrics.status_code == 200
    assert "agora_http_requests_total" in metrics.text


def test_the_storefronts_calls_tell_identity_who_the_browser_is(
    start_gateway: StartGateway, identity: Upstream
) -> None:
    gateway = start_gateway(trusted_proxies="127.0.0.1")
    browser = {"x-forwarded-for": "203.0.113.5"}
    form = gateway.get("/login", headers=browser)
    found = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert found, form.text

    page = gateway.post(
        "/login",
        data={"email": "ada@example.com", "password": "a guess", "csrf_token": found.group(1)},
        headers=browser,
    )

    assert "Wrong email or password" in page.text
    (seen,) = sent_on(identity, page.headers["x-request-id"])
    assert seen.path_qs == "/token"
    assert header(seen, "X-Forwarded-For") == ["203.0.113.5"]
    assert header(seen, "X-Forwarded-Proto") == ["http"]
