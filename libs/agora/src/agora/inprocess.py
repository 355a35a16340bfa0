"""Calls to a service that runs in this process: its ASGI app is called directly, without a
socket or HTTP parsing (co-location, ADR 52).

A process that hosts several services registers each one's app here under its name
(:func:`serve_in_process`); the service client (``agora.client``) then sends calls to those names
through :func:`exchange` instead of over the network, with everything else the same: the same
headers (trace context, token, request id), timeouts, retries, breakers and problems. What the
callee sees is the ASGI scope its server would have made; what the caller reads is the part of
``aiohttp.ClientResponse`` the chassis reads (:class:`InProcessResponse`).

Each exchange runs the callee in a task of its own, so the callee's context variables (the request
id, the token, the current span) are its own, as they would be in another process, and a caller
that gives up (a timeout, a cancellation) cancels what the callee was doing, as a closed
connection would.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    MutableMapping,
)
from typing import Any
from urllib.parse import unquote

import aiohttp
import structlog
from multidict import CIMultiDict, CIMultiDictProxy

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]

log = structlog.get_logger("agora.inprocess")

# Where a callee's server would say it was reached, and the caller it would see.
_SERVER = ("in-process", 0)
_CLIENT = ("127.0.0.1", 0)

_apps: dict[str, ASGIApp] = {}


def serve_in_process(service: str, app: ASGIApp) -> Callable[[], None]:
    """Send this process's calls to ``service`` to ``app``; returns what stops that."""
    if service in _apps:
        raise ValueError(f"{service} is already served in this process")
    _apps[service] = app

    def stop() -> None:
        if _apps.get(service) is app:
            del _apps[service]

    return stop


def in_process(service: str) -> ASGIApp | None:
    """The app of ``service`` when it runs in this process."""
    return _apps.get(service)


class BrokenExchange(aiohttp.ClientConnectionError):
    """The callee failed before it finished answering (it raised, or ended early): to its caller,
    what a connection broken off is over the network."""


class InProcessResponse:
    """An in-process answer, read as the chassis reads an ``aiohttp.ClientResponse``: status,
    headers, ``read()``, ``content.iter_any()`` and ``release()``."""

    def __init__(
        self,
        status: int,
        raw_headers: list[tuple[bytes, bytes]],
        chunks: asyncio.Queue[bytes | BaseException | None],
        task: asyncio.Task[None],
    ) -> None:
        self.status = status
        self.raw_headers = tuple(raw_headers)
        self.headers = CIMultiDictProxy(
            CIMultiDict((k.decode("latin-1"), v.decode("latin-1")) for k, v in raw_headers)
        )
        length = self.headers.get("content-length")
        self.content_length = int(length) if length is not None and length.isdigit() else None
        self.content = self  # `response.content.iter_any()`, as on aiohttp's response
        self._chunks = chunks
        self._task = task
        self._ended = False

    async def iter_any(self) -> AsyncIterator[bytes]:
        """The body's chunks as the callee sends them."""
        while not self._ended:
            chunk = await self._chunks.get()
            if chunk is None:
                self._ended = True
            elif isinstance(chunk, BaseException):
                self._ended = True
                raise BrokenExchange("the callee broke off its answer") from chunk
            elif chunk:
                yield chunk

    async def read(self) -> bytes:
        """The whole body."""
        return b"".join([chunk async for chunk in self.iter_any()])

    def release(self) -> None:
        """Done with the answer: a callee still sending (a stream) is stopped."""
        if not self._task.done():
            self._task.cancel()


async def exchange(
    app: ASGIApp,
    method: str,
    path_qs: str,
    headers: Iterable[tuple[str, str]],
    body: bytes | AsyncIterable[bytes] | None,
) -> InProcessResponse:
    """Send one request to ``app`` and return once its answer's head has come.

    ``path_qs`` is the path (percent-encoded, as it would go on the wire) and query. The body,
    when there is one, is handed over as it is (bytes at once, an iterable chunk by chunk).
    Raises :class:`BrokenExchange` when the app fails before answering."""
    loop = asyncio.get_running_loop()
    head: asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]] = loop.create_future()
    chunks: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
    answered = asyncio.Event()
    raw_path, _, query = path_qs.partition("?")
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(raw_path),
        "raw_path": raw_path.encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "root_path": "",
        "headers": _scope_headers(headers, body),
        "client": _CLIENT,
        "server": _SERVER,
    }
    bodies = _request_messages(body)

    async def receive() -> Message:
        message = await anext(bodies, None)
        if message is not None:
            return message
        await answered.wait()  # as a server does: the client goes away once it has the answer
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            head.set_result((message["status"], list(message.get("headers", []))))
        elif message["type"] == "http.response.body":
            chunks.put_nowait(message.get("body", b""))
            if not message.get("more_body", False):
                chunks.put_nowait(None)
                answered.set()

    async def serve() -> None:
        try:
            await app(scope, receive, send)
        except Exception as error:
            # What a server does with an app that raised: say so, and break off the exchange.
            log.error(
                "exception in an in-process call", method=method, path=raw_path, exc_info=error
            )
            if not head.done():
                head.set_exception(BrokenExchange("the callee failed before answering"))
            else:
                chunks.put_nowait(error)
            return
        if not head.done():
            head.set_exception(BrokenExchange("the callee ended without answering"))
        elif not answered.is_set():
            chunks.put_nowait(BrokenExchange("the callee ended before its body did"))

    # A context of its own, as another process would have: the caller's request id, token and
    # current span reach the callee through the headers only.
    task = asyncio.create_task(
        serve(), name=f"in-process {method} {raw_path}", context=contextvars.Context()
    )
    try:
        status, raw_headers = await head
    except BaseException:
        task.cancel()
        raise
    return InProcessResponse(status, raw_headers, chunks, task)


def _scope_headers(
    headers: Iterable[tuple[str, str]], body: bytes | AsyncIterable[bytes] | None
) -> list[tuple[bytes, bytes]]:
    out = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in headers
        if name.lower() not in ("content-length", "transfer-encoding", "host")
    ]
    out.append((b"host", b"in-process"))
    if isinstance(body, bytes):
        out.append((b"content-length", str(len(body)).encode()))
    elif body is not None:
        out.append((b"transfer-encoding", b"chunked"))
    return out


async def _request_messages(body: bytes | AsyncIterable[bytes] | None) -> AsyncIterator[Message]:
    if body is None or isinstance(body, bytes):
        yield {"type": "http.request", "body": body or b"", "more_body": False}
        return
    async for chunk in body:
        yield {"type": "http.request", "body": chunk, "more_body": True}
    yield {"type": "http.request", "body": b"", "more_body": False}
