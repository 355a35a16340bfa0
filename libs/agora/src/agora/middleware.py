"""One ASGI middleware for what every request needs: request id, trace span, metrics, access log,
the caller's token for onward calls, and a cap on the body size.

It is plain ASGI rather than several ``BaseHTTPMiddleware`` layers: each layer of those costs a
task and a copy per request, and this runs on every request of every service and the gateway.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Counter, Histogram

from agora import context
from agora.errors import PROBLEM_JSON, PayloadTooLarge, problem_body
from agora.telemetry import SERVICE, extract

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUESTS = Counter(
    "agora_http_requests_total",
    "HTTP requests served, by route template, method and status.",
    ["service", "route", "method", "status"],
)
LATENCY = Histogram(
    "agora_http_request_duration_seconds",
    "Time to serve an HTTP request, from first byte in to last byte out.",
    ["service", "route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

REQUEST_ID_HEADER = b"x-request-id"
_SAFE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
# Probes, scrapes and the console's polls of /internal/... are too frequent to log or trace;
# they are still counted.
QUIET_PATHS = frozenset({"/livez", "/readyz", "/metrics"})
QUIET_PREFIX = "/internal/"

log = structlog.get_logger("agora.http")


class RequestContext:
    """Request id, span, metrics, access log, bearer token and body cap, in one pass."""

    def __init__(self, app: ASGIApp, *, service: str, max_body_bytes: int) -> None:
        self.app = app
        self.service = service
        self.max_body_bytes = max_body_bytes
        self.tracer = trace.get_tracer("agora.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers: dict[str, str] = {}
        request_id = b""
        token: str | None = None
        length = -1
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                request_id = value
            elif name == b"authorization":
                scheme, _, credentials = value.decode("latin-1").partition(" ")
                token = credentials.strip() if scheme.lower() == "bearer" else None
            elif name == b"content-length":
                length = int(value) if value.isdigit() else -1
            elif name in (b"traceparent", b"tracestate"):
                headers[name.decode()] = value.decode("latin-1")
        if not _SAFE_ID.match(request_id):
            request_id = uuid.uuid4().hex.encode()
        rid = request_id.decode()
        method: str = scope["method"]
        path: str = scope["path"]
        quiet = path in QUIET_PATHS or path.startswith(QUIET_PREFIX)
        status = 500
        refused = False  # a 413 was sent for a body that grew past the cap while streaming
        received = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if refused:
                return  # whatever the app answers after the 413 goes nowhere
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (REQUEST_ID_HEADER, request_id)]
            await send(message)

        request_token = context.request_id.set(rid)
        bearer_token = context.bearer_token.set(token)
        span = None
        if not quiet:
            span = self.tracer.start_span(
                f"{method} {path}",
                context=extract(headers),
                kind=SpanKind.SERVER,
                attributes={SERVICE: self.service},
            )
            span.set_attribute("http.request.method", method)
            span.set_attribute("url.path", path)
            span.set_attribute("agora.request_id", rid)
        try:
            if length > self.max_body_bytes:
                await _too_large(send_wrapper, self.max_body_bytes, path)
                return

            async def capped_receive() -> Message:
                # A body sent without Content-Length is counted as it arrives; past the cap the
                # client gets a 413 at once and the app is told the client went away.
                nonlocal received, refused
                message = await receive()
                if message["type"] == "http.request" and not refused:
                    received += len(message.get("body", b""))
                    if received > self.max_body_bytes:
                        await _too_large(send_wrapper, self.max_body_bytes, path)
                        refused = True
                        return {"type": "http.disconnect"}
                return message

            app_receive = receive if length >= 0 else capped_receive
            if span is None:
                await self.app(scope, app_receive, send_wrapper)
            else:
                with trace.use_span(span, end_on_exit=False):
                    await self.app(scope, app_receive, send_wrapper)
        except BaseException as error:
            if span is not None:
                span.record_exception(error)
            raise
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or ("(unmatched)" if status == 404 else path)
            REQUESTS.labels(self.service, template, method, str(status)).inc()
            LATENCY.labels(self.service, template, method).observe(elapsed)
            if span is not None:
                span.update_name(f"{method} {template}")
                span.set_attribute("http.route", template)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                with trace.use_span(span, end_on_exit=True):
                    log.info(
                        "request",
                        method=method,
                        path=path,
                        route=template,
                        status=status,
                        duration_ms=round(elapsed * 1000, 2),
                    )
            context.request_id.reset(request_token)
            context.bearer_token.reset(bearer_token)


async def _too_large(send: Send, limit: int, path: str) -> None:
    body = problem_body(
        413,
        PayloadTooLarge.title,
        detail=f"the body is larger than {limit} bytes",
        type_="/problems/payload-too-large",
        instance=path,
        request_id=context.request_id.get(),
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
