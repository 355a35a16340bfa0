"""The gateway's composition root: the chassis app, the proxy, `GET /api`, the rate limit, and
the storefront's pages."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.middleware import Middleware

from agora.app import Resources, ServiceDefinition, create_service_app
from agora.auth import TokenVerifier
from agora.client import ServiceClient
from agora.topology import Topology, load_topology
from gateway import health, storefront
from gateway.console import routes as console
from gateway.console.sections import Console
from gateway.headers import install_security_headers
from gateway.health import Probes, probe_client
from gateway.ratelimit import Limiter, RateLimit, RedisBuckets, TokenBuckets, password_attempts
from gateway.routing import Proxy
from gateway.sessions import LocalEnds, RedisEnds, RefuseEnded, Sessions
from gateway.settings import GatewaySettings
from gateway.web import STATIC_DIR, Transport, install

DESCRIPTION = (
    "The one door to Agora. `/api/<service>/<path>` reaches a service's public routes (as the "
    "topology declares them); `GET /api` lists the services and their health."
)


def create_app(
    settings: GatewaySettings | None = None,
    *,
    topology: Topology | None = None,
    verifier: TokenVerifier | None = None,
) -> FastAPI:
    settings = settings or GatewaySettings()
    topology = topology or load_topology()
    probe = probe_client(settings)
    buckets = TokenBuckets(
        settings.rate_limit, settings.rate_burst, max_clients=settings.rate_clients
    )
    # With a Redis, the buckets are shared by every gateway replica; the local ones stand in
    # while Redis is away.
    shared = (
        RedisBuckets(settings.redis_url, buckets, prefix=settings.redis_prefix)
        if settings.redis_url
        else None
    )
    limiter: Limiter = shared or buckets
    # Tokens ended by logging out: in Redis too when there is one, so that every replica
    # refuses them (ADR 22).
    local_ends = LocalEnds()
    shared_ends = (
        RedisEnds(settings.redis_url, local_ends, prefix=settings.redis_prefix)
        if settings.redis_url
        else None
    )
    ended = shared_ends or local_ends
    transport = Transport(settings.proxies, always_secure=settings.profile == "production")

    # Started with the app, in this order, and closed in the same order after it.
    lifelong: list[ServiceClient | RedisBuckets | RedisEnds] = [
        part for part in (probe, shared, shared_ends) if part is not None
    ]

    async def start(_: Resources) -> None:
        for part in lifelong:
            await part.start()

    async def close(_: Resources) -> None:
        for part in lifelong:
            await part.close()

    app = create_service_app(
        settings,
        ServiceDefinition(
            title="Agora gateway",
            description=DESCRIPTION,
            routers=[health.router, *storefront.ROUTERS, console.router],
        ),
        on_startup=[start],
        on_shutdown=[close],
        verifier=verifier,
        use_database=False,
        # Its port is the public door: its metrics are the operator's, like its /internal/*.
        private_metrics=True,
    )
    # What the routers ask for by type (agora.deps.provided).
    resources: Resources = app.state.resources
    resources.provide(settings)
    resources.provide(Probes(topology, settings, probe, shared))
    resources.provide(Console.of(topology, settings))
    # Both inside the chassis middleware rather than around it, so that every answer (a 429, a
    # forwarded one) carries a request id and is traced, logged and counted; the proxy innermost,
    # after the rate limit, answering `/api/<service>/...` without FastAPI's router.
    app.user_middleware.append(
        Middleware(
            RateLimit,
            limiter=limiter,
            resources=app.state.resources,
            proxies=settings.proxies,
            attempts=password_attempts(settings, topology, shared),
        )
    )
    # Before the proxy: a bearer token ended by logging out gets no further.
    app.user_middleware.append(Middleware(RefuseEnded, ended=ended))
    app.user_middleware.append(
        Middleware(
            Proxy, topology=topology, resources=app.state.resources, proxies=settings.proxies
        )
    )
    # The pages: templates' CSRF secret and cookie, error pages on page paths, their files.
    sessions = Sessions(ended, lifetime=settings.session_lifetime)
    install(app, session_secret=settings.session_secret, transport=transport, sessions=sessions)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    install_security_headers(app, transport, hsts_max_age=settings.hsts_max_age)
    return app


def migrate(settings: GatewaySettings | None = None) -> None:
    """Nothing to do: the gateway owns no data. (The runner calls this for every process.)"""
