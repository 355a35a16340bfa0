"""Serving an app over HTTP: uvicorn on httptools, with a bound on the size of a request's head.

httptools (the fast parser uvicorn runs here) sets no limit on a request line or a header: one
64 MiB header is read into memory whole and handed on. :func:`bounded_http` gives uvicorn a
protocol that counts the head (request line and headers) as it arrives and, past the bound,
answers ``431 Request Header Fields Too Large`` and closes the connection, without reading the
rest (ADR 0023).

:class:`GracefulServer` stops on SIGTERM in order (ADR 0030): readiness turns false at once, the
server goes on serving for a short drain while callers notice, then takes no new connection, lets
the requests in flight finish, and runs the app's shutdown (consumers, the relay's last pass);
past ``stop_timeout`` the process ends anyway.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

import structlog
import uvicorn
from uvicorn._compat import asyncio_run
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from agora.errors import PROBLEM_JSON, problem_body

HEAD_TOO_LARGE = 431
# The exit status of a stop that overran its bound.
STOP_OVERRAN = 1

log = logging.getLogger("agora.server")


class HeadTooLarge(Exception):
    """Raised inside the parser's callbacks: it stops the parser at once (httptools turns it into
    a parser error, and uvicorn into a call of :meth:`BoundedHttpTools.send_400_response`)."""


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request whose head passes ``max_head_bytes``.

    Two counts keep the bound. The parser's callbacks count what it has parsed (the URL as it
    comes, each header once complete), exactly. But httptools keeps a header's value to itself
    until the value ends, so a header that never ends is counted as raw bytes instead: the bytes
    received while a head is still unfinished.
    """

    max_head_bytes = 32 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Bytes of the current head seen so far; None between a head's end and the next request.
        self._head: int | None = None
        self._heads = 0
        self._refusing = False

    def data_received(self, data: bytes) -> None:
        if self._refusing:
            return
        heads, unfinished = self._heads, self._head is not None
        super().data_received(data)
        # A chunk fed while one head stays unfinished from before to after it is all head: the
        # parser found no end in it. (A chunk that ends a head, or starts one, is counted exactly
        # by the callbacks.)
        if unfinished and self._head is not None and heads == self._heads and not self._refusing:
            self._head += len(data)
            if self._head > self.max_head_bytes:
                self._refuse()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._heads += 1
        self._head = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        # As sent: the name, ": ", the value and the line's end.
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head = None
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refusing:
            self._answer_431()
        else:
            super().send_400_response(msg)

    def _count(self, size: int) -> None:
        if self._head is None:
            return
        self._head += size
        if self._head > self.max_head_bytes:
            self._refusing = True
            raise HeadTooLarge

    def _refuse(self) -> None:
        self._refusing = True
        self._answer_431()

    def _answer_431(self) -> None:
        self.logger.info("Refused a request whose head passes %d bytes.", self.max_head_bytes)
        body = problem_body(
            HEAD_TOO_LARGE,
            "Request header fields too large",
            detail=f"the request line and headers may take at most {self.max_head_bytes} bytes",
        )
        head = [STATUS_LINE[HEAD_TOO_LARGE]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.extend(
            [
                b"content-type: " + PROBLEM_JSON.encode() + b"\r\n",
                b"content-length: " + str(len(body)).encode() + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
            ]
        )
        self.transport.write(b"".join(head) + body)
        # Read no more of it: what is left of the head is not wanted.
        self.transport.pause_reading()
        self.transport.close()


def bounded_http(max_head_bytes: int) -> type[asyncio.Protocol]:
    """The HTTP protocol class for uvicorn's ``http=``: httptools, heads bound to this size."""
    if max_head_bytes < 1:
        raise ValueError("a request's head takes at least one byte")
    return type("BoundedHttpTools", (BoundedHttpTools,), {"max_head_bytes": max_head_bytes})


def graceful_timeout(stop_timeout: float, stop_drain: float) -> int:
    """How long uvicorn waits for the requests in flight once it stops taking new ones (whole
    seconds, as uvicorn takes it): half of what the drain leaves of the bound; the app's shutdown
    (consumers finishing, the relay's last pass) has the other half."""
    return max(1, int((stop_timeout - stop_drain) / 2))


def server_config(
    app: Any,
    *,
    host: str,
    port: int,
    max_header_bytes: int,
    stop_timeout: float = 20.0,
    stop_drain: float = 0.0,
) -> uvicorn.Config:
    """How ``agora serve`` runs an app: uvloop, httptools with a bounded head, the chassis's
    logs."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=bounded_http(max_header_bytes),
        lifespan="on",
        # The chassis has configured JSON logs, and it logs each request itself.
        log_config=None,
        access_log=False,
        # uvicorn believes no X-Forwarded-*: each app reads them itself, from the proxies its
        # settings trust (agora.forwarded), and the gateway trusts none unless told.
        proxy_headers=False,
        timeout_graceful_shutdown=graceful_timeout(stop_timeout, stop_drain),
    )


class GracefulServer(uvicorn.Server):
    """uvicorn, stopping on SIGTERM (or a first SIGINT) as a container's replica should.

    ``on_stop`` runs at once on the signal (the app turns its readiness false); the server keeps
    serving for ``drain`` seconds, then stops as uvicorn does (no new connections, requests in
    flight finish, lifespan shutdown). A watchdog ends the process with status 1 if all that
    overruns ``stop_timeout``. A stop carried out in time exits 0: uvicorn would raise the signal
    again once done, and the process would die of it, as if it had been killed. ``on_started``
    runs once the app has started and the socket listens.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        stop_timeout: float,
        drain: float,
        on_stop: Callable[[], None] | None = None,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.stop_timeout = stop_timeout
        self.drain = drain
        self.on_stop = on_stop
        self.on_started = on_started
        self.stop_asked: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.stop_asked is not None:
            # A second signal: uvicorn's own way (a second Ctrl+C forces the exit).
            super().handle_exit(sig, frame)
            return
        self.stop_asked = time.monotonic()
        if self.on_stop is not None:
            self.on_stop()
        watchdog = threading.Timer(self.stop_timeout, self._overran)
        watchdog.daemon = True
        watchdog.start()

    async def on_tick(self, counter: int) -> bool:
        if self.stop_asked is not None and time.monotonic() - self.stop_asked >= self.drain:
            self.should_exit = True
        return await super().on_tick(counter)

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started and self.on_started is not None:
            self.on_started()

    async def serve(self, sockets: Any = None) -> None:
        with self.capture_signals():
            await self._serve(sockets)
            # Stopped as asked, in order: nothing to raise again.
            self._captured_signals.clear()

    def _overran(self) -> None:
        log.error("the stop overran its bound of %g s, exiting anyway", self.stop_timeout)
        os._exit(STOP_OVERRAN)


def serve_together(members: Mapping[str, GracefulServer]) -> bool:
    """Run several servers in one process and one loop (a group's members, ADR 53) until a
    signal stops them all, each in order as :class:`GracefulServer` stops; True when every one
    started. A member that fails to start ends the process, as it would end a process of its
    own; one that stops for any other reason stops the others.

    Each member's server runs in a task whose context names the member (structlog's context
    variables), so that what its app starts (consumers, the relay, its own loops) logs as that
    service, as it would in a process of its own."""
    servers = list(members.values())

    def in_context_of(name: str) -> contextvars.Context:
        context = contextvars.copy_context()
        context.run(structlog.contextvars.bind_contextvars, service=name)
        return context

    async def serve_all() -> None:
        tasks = [
            asyncio.create_task(server._serve(), context=in_context_of(name))
            for name, server in members.items()
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for server in servers:
            server.should_exit = True  # already so after a signal; else the others follow
        await asyncio.gather(*tasks)

    def handle_exit(sig: int, frame: FrameType | None) -> None:
        for server in servers:
            server.handle_exit(sig, frame)

    handled = (signal.SIGINT, signal.SIGTERM)
    original = {sig: signal.signal(sig, handle_exit) for sig in handled}
    try:
        asyncio_run(serve_all(), loop_factory=servers[0].config.get_loop_factory())
    finally:
        for sig, handler in original.items():
            signal.signal(sig, handler)
    return all(server.started for server in servers)
