"""Real small services on free ports standing in for identity and catalog, and the gateway
served by uvicorn in front of them, so every test goes over real HTTP as a user's would."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from multidict import CIMultiDict

from agora.auth import TokenVerifier
from agora.topology import Topology
from agora_tools.testing import free_port
from gateway.bootstrap import create_app
from gateway.settings import GatewaySettings

ISSUER = "agora-identity"
AUDIENCE = "agora"
KID = "test-key-1"
# What the fake services' /readyz say they run.
UPSTREAM_VERSION = "1.2.3"


def build_topology() -> Topology:
    """Identity and catalog (served by the fakes below), inventory (down), and orders, mounted
    at /api itself (its paths name what they serve) and answered by catalog's fake."""
    return Topology.model_validate(
        {
            "services": {
                "identity": {
                    "module": "identity.bootstrap",
                    "routes": [
                        {"methods": ["POST"], "path": "/users", "auth": "public"},
                        {"methods": ["POST"], "path": "/token", "auth": "public"},
                        {"methods": ["GET"], "path": "/me", "auth": "user"},
                        {"methods": ["GET"], "path": "/.well-known/jwks.json", "auth": "public"},
                    ],
                },
                "catalog": {
                    "module": "catalog.bootstrap",
                    "depends_on": ["identity"],
                    "routes": [
                        {"methods": ["GET"], "path": "/products", "auth": "public"},
                        {"methods": ["POST"], "path": "/products", "auth": "admin"},
                        {"methods": ["GET"], "path": "/products/{sku}", "auth": "public"},
                        {"methods": ["PATCH"], "path": "/products/{sku}", "auth": "admin"},
                        {"methods": ["POST"], "path": "/uploads", "auth": "public"},
                    ],
                },
                "inventory": {
                    "module": "inventory.bootstrap",
                    "routes": [{"methods": ["GET"], "path": "/stock/{sku}", "auth": "public"}],
                },
                "orders": {
                    "module": "orders.bootstrap",
                    "prefix": "/api",
                    "routes": [{"methods": ["GET"], "path": "/orders/{id}", "auth": "public"}],
                },
            }
        }
    )


# --- tokens -------------------------------------------------------------------------------------


@dataclass
class Keys:
    """The test signing key (which identity's fake publishes) and a stranger's key."""

    signing: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    stranger: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    def jwks(self) -> dict[str, Any]:
        jwk = jwt.algorithms.OKPAlgorithm.to_jwk(self.signing.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": KID, "alg": "EdDSA", "use": "sig"}]}

    def token(
        self,
        *,
        roles: tuple[str, ...] = ("customer",),
        key: Ed25519PrivateKey | None = None,
        kid: str = KID,
        audience: str = AUDIENCE,
        expires_in: int = 600,
    ) -> str:
        now = int(time.time())
        claims = {
            "sub": str(uuid.uuid4()),
            "email": "ada@example.com",
            "roles": list(roles),
            "iss": ISSUER,
            "aud": audience,
            "iat": now - 5,
            "exp": now + expires_in,
        }
        return jwt.encode(
            claims,
            key or self.signing,
            algorithm="EdDSA",
            headers={"kid": kid, "typ": "at+jwt"},
        )


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys()


# --- upstream services --------------------------------------------------------------------------


@dataclass
class Seen:
    """What a fake service received: method, path with query, headers and body."""

    method: str
    path_qs: str
    headers: Mapping[str, str]  # names in any case
    body: bytes


class Upstream:
    """An aiohttp server in a thread of its own, recording every request it receives."""

    def __init__(self, routes: Callable[[Upstream], list[web.RouteDef]]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.seen: list[Seen] = []
        self.release = threading.Event()  # lets handlers that hang go at teardown
        self._loop = asyncio.new_event_loop()
        self._routes = routes
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> Upstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._record], client_max_size=8 * 1024 * 1024)
        app.add_routes(self._routes(self))
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    @web.middleware
    async def _record(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.path_qs, CIMultiDict(request.headers), body))
        return await handler(request)

    def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def requests_to(self, path_qs: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.path_qs == path_qs]


def _probes() -> list[web.RouteDef]:
    async def ready(_: web.Request) -> web.Response:
        return web.json_response({"status": "ready", "version": UPSTREAM_VERSION})

    async def internal(_: web.Request) -> web.Response:
        return web.Response(text="internal only")

    return [
        web.get("/readyz", ready),
        web.get("/livez", ready),
        web.get("/metrics", internal),
        web.get("/openapi.json", internal),
    ]


def catalog_routes(upstream: Upstream) -> list[web.RouteDef]:
    async def list_products(request: web.Request) -> web.Response:
        return web.json_response({"items": [], "query": request.rel_url.raw_query_string})

    async def get_product(request: web.Request) -> web.StreamResponse:
        sku = request.match_info["sku"]
        if sku == "missing":
            return web.json_response(
                {"type": "/problems/product-not-found", "title": "Product not found"},
                status=404,
                content_type="application/problem+json",
            )
        if sku == "slow":
            await asyncio.get_running_loop().run_in_executor(None, upstream.release.wait, 30)
        if sku == "big":
            # An answer of unknown length, sent in pieces.
            reply = web.StreamResponse(headers={"content-type": "application/octet-stream"})
            reply.enable_chunked_encoding()
            await reply.prepare(request)
            for index in range(48):
                await reply.write(bytes([index]) * 65536)
            await reply.write_eof()
            return reply
        return web.json_response(
            {"sku": sku, "name": "Teapot"},
            headers={
                "x-catalog-version": "7",
                "cache-control": "max-age=30",
                "proxy-authenticate": "Basic",
                "keep-alive": "timeout=5",
            },
        )

    async def create_product(request: web.Request) -> web.Response:
        return web.json_response({"received": len(await request.read())}, status=201)

    async def upload(request: web.Request) -> web.Response:
        return web.json_response({"received": len(await request.read())}, status=201)

    return [
        *_probes(),
        web.get("/products", list_products),
        web.post("/products", create_product),
        web.get("/products/{sku}", get_product),
        web.patch("/products/{sku}", create_product),
        web.post("/uploads", upload),
    ]


def identity_routes(keys: Keys) -> Callable[[Upstream], list[web.RouteDef]]:
    def routes(_: Upstream) -> list[web.RouteDef]:
        async def jwks(_: web.Request) -> web.Response:
            return web.json_response(keys.jwks())

        async def me(request: web.Request) -> web.Response:
            return web.json_response({"authorization": request.headers.get("Authorization")})

        async def register(_: web.Request) -> web.Response:
            return web.json_response({"id": str(uuid.uuid4())}, status=201)

        async def log_in(_: web.Request) -> web.Response:
            # Whatever the email: no account has a password here.
            return web.json_response(
                {"type": "/problems/invalid-credentials", "title": "Invalid credentials"},
                status=401,
                content_type="application/problem+json",
            )

        return [
            *_probes(),
            web.get("/.well-known/jwks.json", jwks),
            web.get("/me", me),
            web.post("/users", register),
            web.post("/token", log_in),
        ]

    return routes


@pytest.fixture(scope="session")
def catalog() -> Iterator[Upstream]:
    upstream = Upstream(catalog_routes).start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def identity(keys: Keys) -> Iterator[Upstream]:
    upstream = Upstream(identity_routes(keys)).start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def service_urls(catalog: Upstream, identity: Upstream) -> dict[str, list[str]]:
    # Nothing listens on inventory's port: it stands for a service that is down.
    return {
        "catalog": [catalog.url],
        "identity": [identity.url],
        "inventory": [f"http://127.0.0.1:{free_port()}"],
        "orders": [catalog.url],
    }


# --- the gateway --------------------------------------------------------------------------------


class Served:
    """An ASGI app served by uvicorn on a free port, in a thread, for the length of a test."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # No proxy headers: the gateway is the public door, its peer is the client.
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            lifespan="on",
            proxy_headers=False,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> httpx.Client:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the gateway did not start")
            time.sleep(0.01)
        self.client = httpx.Client(base_url=self.url, timeout=15)
        return self.client

    def __exit__(self, *_: object) -> None:
        self.client.close()
        self.server.should_exit = True
        self._thread.join(timeout=15)


StartGateway = Callable[..., httpx.Client]


@pytest.fixture
def topology() -> Topology:
    return build_topology()


@pytest.fixture
def start_gateway(
    service_urls: dict[str, list[str]],
    topology: Topology,
) -> Iterator[StartGateway]:
    """Start a gateway (settings may be overridden; ``replicas`` puts these URLs in the place of
    the named services') and get an HTTP client pointed at it."""
    with ExitStack() as stack:

        def start(
            *,
            verifier: TokenVerifier | None = None,
            replicas: Mapping[str, list[str]] | None = None,
            **overrides: Any,
        ) -> httpx.Client:
            settings = GatewaySettings(
                **{
                    "service_urls": {**service_urls, **(replicas or {})},
                    "rate_limit": 1e9,
                    "rate_burst": 1_000_000,
                    "client_timeout": 1.0,
                    # A replica that is down refuses at once; this bounds a live one's answer,
                    # which on a busy machine (the fakes share the test's process) can take most
                    # of a second.
                    "health_timeout": 5.0,
                    **overrides,
                }
            )
            app = create_app(settings, topology=topology, verifier=verifier)
            return stack.enter_context(Served(app))

        yield start


@pytest.fixture
def gateway(start_gateway: StartGateway) -> httpx.Client:
    return start_gateway()


def sent_on(upstream: Upstream, request_id: str) -> list[Seen]:
    """What the upstream received for the gateway request with this id."""
    return [seen for seen in upstream.seen if seen.headers.get("X-Request-Id") == request_id]
