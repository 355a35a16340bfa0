"""The proxy: ``<prefix>/<path>`` to the service's ``/<path>``, for declared routes only.

A service's prefix is ``/api/<service>`` unless the topology gives another (orders says ``/api``,
its paths being ``/orders/...`` already).

A request is forwarded only when the topology lists its method and path as a public route of
that service; everything else (internal endpoints such as ``/metrics`` or ``/readyz``, unknown
services, unlisted paths) is a 404, a known path with another method a 405. Routes that need a
user are checked here first (the services check again). Status, headers and body come back as the
service sent them, minus the hop-by-hop headers; large answers are streamed through.

The service learns who called from ``X-Forwarded-For`` and ``X-Forwarded-Proto``, which carry the
client as the gateway resolved it (the peer, or what a trusted proxy in front said): whatever a
client wrote in those headers itself is dropped, so it never reaches a service as the client.

It is a plain ASGI middleware, the innermost one, rather than a FastAPI route: it runs on every
request through the gateway and needs nothing of FastAPI's parameter parsing, and skipping FastAPI's
router and exception layers saves about a seventh of the gateway's CPU time per request (profiled).
Anything not under ``/api/`` (``GET /api``, the probes, the docs) goes on to the app.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import quote

import aiohttp
import structlog

from agora import context
from agora.app import Resources
from agora.auth import Principal
from agora.errors import (
    BadGateway,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Problem,
    ServiceUnavailable,
    Unauthorized,
)
from agora.forwarded import Client, TrustedProxies
from agora.middleware import ASGIApp, Message, Receive, Scope, Send
from agora.topology import Route, Service, Topology
from gateway.problems import send_problem

log = structlog.get_logger("gateway.routing")

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade"}
)
# Request headers not passed on as they came: the onward request's own host and length, and what
# the service client sets itself from this request (the caller's token, the trace context as the
# gateway's span, the request id as the chassis middleware checked it).
_NOT_FORWARDED = HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"expect",
    b"authorization",
    b"traceparent",
    b"tracestate",
    b"x-request-id",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
}
# Response headers the gateway's own server and middleware write (a copy would be a duplicate).
_NOT_RETURNED = HOP_BY_HOP | {b"date", b"server", b"x-request-id"}
# A reply of known length up to this size is read in one go and sent in one message.
_SMALL_REPLY = 64 * 1024
# Characters left as they are when a path is quoted again for the onward request (RFC 3986 pchar).
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
PREFIX = "/api/"


class MethodNotAllowed(Problem, status=405, title="Method not allowed"):
    """The path is routed, but not for this method; ``Allow`` names those it is."""


class RouteTemplate(NamedTuple):
    """Stands in for the matched route in the ASGI scope, so metrics and logs carry the template
    (``/api/catalog/products/{sku}``) rather than one label per product."""

    path: str


class _ClientGone(Exception):
    """The caller went away (or was refused for its body size) before its body arrived."""


class Proxy:
    """ASGI middleware answering ``/api/...`` itself; everything else goes to ``app``."""

    UNMATCHED = RouteTemplate("/api/{path}")

    def __init__(
        self,
        app: ASGIApp,
        *,
        topology: Topology,
        resources: Resources,
        proxies: TrustedProxies | None = None,
    ) -> None:
        self.app = app
        self.resources = resources
        self.proxies = proxies or TrustedProxies(())
        self.max_body_bytes = resources.settings.max_body_bytes
        self.templates = {
            id(route): RouteTemplate(f"{service.public_prefix}{route.path}")
            for service in topology
            for route in service.routes
        }
        # Longest prefix first: `/api/catalog` is tried before `/api`.
        self.mounts = sorted(
            ((service.public_prefix + "/", service) for service in topology),
            key=lambda mount: -len(mount[0]),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        # The gateway's own /internal/* and /metrics go on to the app, which asks the operator's
        # token for them (ADR 24): a caller's address proves nothing behind a proxy.
        if not path.startswith(PREFIX) or path == PREFIX:
            await self.app(scope, receive, send)  # `/api/` is the app's (a redirect to `/api`)
            return
        scope["route"] = self.UNMATCHED
        try:
            await self._route(scope, receive, send, path)
        except Problem as problem:
            await send_problem(scope, receive, send, problem)
        except _ClientGone:
            return

    async def _route(self, scope: Scope, receive: Receive, send: Send, public: str) -> None:
        method: str = scope["method"]
        if _has_dot_segment(public):
            raise NotFound(f"no public route {public!r}")
        mounted = [
            (service, "/" + public[len(prefix) :])
            for prefix, service in self.mounts
            if public.startswith(prefix) and len(public) > len(prefix)
        ] + [(service, "") for prefix, service in self.mounts if public == prefix[:-1]]
        found = next(
            (
                (service, path, route)
                for service, path in mounted
                if (route := service.route_for(method, path)) is not None
            ),
            None,
        )
        if found is None:
            raise _not_routed(mounted, method, public)
        service, path, route = found
        scope["route"] = self.templates[id(route)]
        if route.auth != "public":
            principal = await self._authenticate()
            if route.auth == "admin" and not principal.is_admin:
                raise Forbidden("this needs the admin role")
        await self._forward(scope, receive, send, service.name, path, route.path)

    async def _authenticate(self) -> Principal:
        token = context.bearer_token.get()
        if not token:
            raise Unauthorized("send an access token: Authorization: Bearer <token>")
        verifier = self.resources.verifier
        if verifier is None:
            raise ServiceUnavailable("tokens cannot be checked: identity's address is not known")
        return await verifier.verify(token)

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, service: str, path: str, route: str
    ) -> None:
        client = self.resources.client
        headers, has_body = _onward_headers(scope, self.proxies.client(scope))
        body = await _read_body(receive, self.max_body_bytes) if has_body else None
        # The path sent on is the one checked, encoded again, rather than the raw one: no second
        # decoding can then make the service see a path the gateway did not check.
        path_qs = quote(path, safe=_PATH_SAFE)
        if query := scope["query_string"]:
            path_qs = f"{path_qs}?{query.decode('latin-1')}"
        started = False
        try:
            # Named by its template, the route has one breaker however many paths it serves.
            async with client.stream(
                service, scope["method"], path_qs, headers=headers, body=body, route=route
            ) as reply:
                out = _returned_headers(reply.raw_headers)
                length = reply.content_length
                if length is not None and length <= _SMALL_REPLY:
                    content = await reply.read()
                    await send(
                        {"type": "http.response.start", "status": reply.status, "headers": out}
                    )
                    started = True
                    await send({"type": "http.response.body", "body": content})
                    return
                await send({"type": "http.response.start", "status": reply.status, "headers": out})
                started = True
                async for chunk in reply.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
        # A failure before the answer (unreachable, timed out) comes out of the client as a
        # problem already; what is left is the service breaking off while its body arrives.
        except (TimeoutError, aiohttp.ClientError) as error:
            log.warning("service broke off its answer", service=service, error=repr(error))
            if started:
                # Too late for a problem answer: ending here makes the server close the
                # connection, so the caller sees a cut-off body rather than a complete-looking one.
                return
            raise BadGateway(f"{service} broke off its answer") from error


def _has_dot_segment(path: str) -> bool:
    # `.` and `..` would be resolved by the onward URL into some other path than the one checked.
    return "/./" in path or "/../" in path or path.endswith(("/.", "/.."))


def _not_routed(mounted: list[tuple[Service, str]], method: str, public: str) -> Problem:
    allowed = sorted(
        {
            m
            for service, path in mounted
            for route in service.routes
            if route.pattern.match(path)
            for m in _methods(route)
        }
    )
    if not allowed:
        return NotFound(f"no public route {public!r}")
    return MethodNotAllowed(f"{method} is not allowed here", headers={"Allow": ", ".join(allowed)})


def _methods(route: Route) -> tuple[str, ...]:
    return (*route.methods, "HEAD") if "GET" in route.methods else route.methods


def _onward_headers(scope: Scope, caller: Client) -> tuple[list[tuple[str, str]], bool]:
    """The headers to send on, and whether the request has a body."""
    headers: list[tuple[str, str]] = []
    host = ""
    has_body = False
    for name, value in scope["headers"]:
        if name in _NOT_FORWARDED or name.startswith(b"proxy-"):
            if name == b"content-length":
                has_body = value != b"0"
            elif name == b"transfer-encoding":
                has_body = True
            elif name == b"host":
                host = value.decode("latin-1")
            continue
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    # Only the client the gateway resolved: a chain as the client sent it would let it name
    # itself to a service that trusts the gateway.
    headers.append(("x-forwarded-for", caller.address or "unknown"))
    headers.append(("x-forwarded-proto", caller.scheme))
    if host:
        headers.append(("x-forwarded-host", host))
    return headers, has_body


def _returned_headers(raw: tuple[tuple[bytes, bytes], ...]) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = []
    for name, value in raw:
        lower = name.lower()
        if lower in _NOT_RETURNED or lower.startswith(b"proxy-"):
            continue
        headers.append((lower, value))
    return headers


async def _read_body(receive: Receive, limit: int) -> bytes:
    # The body is read whole (at most the 1 MiB cap) before the service is called, rather than
    # streamed into the call: a caller that goes away half-way, or whose chunked body outgrows the
    # cap, would otherwise break the onward call, and the service client counts a broken call
    # against the service's circuit breaker; a few such uploads would shut a healthy service off.
    # Reading first also lets the client retry an idempotent call with the same bytes.
    # The chassis middleware already refuses a body over the cap, by Content-Length before it
    # arrives and by counting when it comes chunked; the count here keeps the cap true whatever
    # sits in front of this app.
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
