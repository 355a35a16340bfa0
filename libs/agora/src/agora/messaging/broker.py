"""The connection to NATS JetStream, kept alive whatever the broker does.

A service must start and serve while the broker is away (rule 3): :meth:`Broker.start` returns at
once and a background task connects, retrying with backoff, and nats-py reconnects by itself
after that. Streams are created or updated idempotently: one per publishing service, subjects
``agora.<service>.>``, file storage, a de-duplication window of two minutes (so a relay that
publishes a row twice is caught by the broker).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import nats
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from agora.backoff import Backoff, retrying, warn
from agora.messaging.credentials import NatsCredentials, connect_options
from agora.messaging.envelope import stream_name, stream_subjects
from agora.tasks import cancel_and_wait

log = structlog.get_logger("agora.broker")

DUPLICATE_WINDOW = 120.0  # seconds; at least two minutes (the relay's retries stay inside it)
CLOSE_TIMEOUT = 5.0  # seconds a closing connection may spend draining its subscriptions
# Until the first connection: the first pause 0.1 to 0.15 s, doubling up to 5 s, for as long as
# it takes (nats-py reconnects by itself after that).
CONNECT_BACKOFF = Backoff(initial=0.1, max=5.0, jitter=0.05)


class BrokerUnavailable(ConnectionError):
    """The broker is not connected right now."""


class Broker:
    def __init__(
        self,
        url: str,
        *,
        name: str,
        connect_timeout: float = 2.0,
        credentials: NatsCredentials | None = None,
    ) -> None:
        self.url = url
        self.name = name
        self.connect_timeout = connect_timeout
        self.credentials = credentials
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._on_connect: list[Callable[[], Awaitable[None]]] = []

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def js(self) -> JetStreamContext:
        if self._js is None or not self.connected:
            raise BrokerUnavailable(f"not connected to the broker at {self.url}")
        return self._js

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise BrokerUnavailable(f"not connected to the broker at {self.url}")
        return self._nc

    def on_connect(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` after every (re)connection: recreate streams, subscriptions."""
        self._on_connect.append(callback)

    async def start(self) -> None:
        """Begin connecting in the background; returns at once."""
        if self._task is None:
            self._task = asyncio.create_task(self._connect_forever(), name=f"broker:{self.name}")

    async def wait_connected(self) -> None:
        """Until the first connection is made (wrap in ``asyncio.timeout`` to bound it)."""
        await self._connected.wait()

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
        if self._nc is not None and not self._nc.is_closed:
            try:
                # Bounded: a subscription whose queue still holds a message it will never be
                # asked for (a pull answered after its fetch gave up) would keep a drain waiting
                # for nats-py's whole drain timeout, and a stopping process must not hang.
                await asyncio.wait_for(self._nc.drain(), timeout=2 * CLOSE_TIMEOUT)
            except Exception as error:  # closing anyway: a failed drain only loses nothing more
                log.debug("drain failed", error=repr(error))
                await self._nc.close()
        self._nc = None
        self._js = None
        self._connected.clear()

    async def check(self) -> None:
        """A readiness check: raises when the broker is not reachable now."""
        if not self.connected:
            raise BrokerUnavailable("broker not connected")
        await self.nc.flush(timeout=1)

    async def ensure_stream(self, service: str) -> None:
        """Create or update the stream of what ``service`` publishes."""
        name = stream_name(service)
        config = _stream_config(service)
        try:
            await self.js.stream_info(name)
            await self.js.update_stream(config)
        except NotFoundError:
            try:
                await self.js.add_stream(config)
            except BadRequestError:
                # Another replica made it between our look and our add.
                await self.js.update_stream(config)

    async def find_stream(self, service: str) -> None:
        """Make sure another service's stream exists, leaving its settings as they are: made
        here only when it is missing (a command sent, or a consumer started, before that service
        ever ran), which a broker with users refuses to all but the service and the operator."""
        name = stream_name(service)
        try:
            await self.js.stream_info(name)
        except NotFoundError:
            with contextlib.suppress(BadRequestError):  # made meanwhile by someone else
                await self.js.add_stream(_stream_config(service))

    async def _connect_forever(self) -> None:
        unreachable = warn(log, "broker unreachable, retrying", url=self.url)
        await retrying(self._connect, CONNECT_BACKOFF, failed=unreachable)

    async def _connect(self) -> None:
        self._nc = await nats.connect(
            self.url,
            name=self.name,
            connect_timeout=self.connect_timeout,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            drain_timeout=CLOSE_TIMEOUT,
            reconnected_cb=self._reconnected,
            disconnected_cb=self._disconnected,
            error_cb=self._error,
            **connect_options(self.credentials),
        )
        self._js = self._nc.jetstream()
        log.info("broker connected", url=self.url)
        await self._run_on_connect()
        self._connected.set()

    async def _run_on_connect(self) -> None:
        for callback in self._on_connect:
            try:
                await callback()
            except Exception as error:
                log.warning(
                    "after-connect step failed",
                    step=getattr(callback, "__name__", "?"),
                    error=repr(error),
                )

    async def _reconnected(self) -> None:
        log.info("broker reconnected", url=self.url)
        await self._run_on_connect()

    async def _disconnected(self) -> None:
        log.warning("broker disconnected", url=self.url)

    async def _error(self, error: Exception) -> None:
        if "permissions violation" in str(error).lower():
            # What this service's broker user may do is derived from the contracts: a refusal
            # means its code does something they do not say (ADR 25).
            log.error("the broker refused an operation to this user", error=str(error))
            return
        log.debug("broker error", error=repr(error))


def _stream_config(service: str) -> StreamConfig:
    return StreamConfig(
        name=stream_name(service),
        subjects=stream_subjects(service),
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW,
    )
