"""The client for calling other services, and the gateway's way through to them.

One pooled aiohttp session per process. Each call goes to the next replica of the callee in
round-robin order, skipping replicas whose circuit breaker is open; when every replica's breaker is
open the call fails at once with a 503 problem naming the service. Idempotent calls (GET, HEAD,
OPTIONS, PUT, DELETE, or any call carrying an ``Idempotency-Key``) are retried a bounded number of
times with jittered backoff, on the next replica, after a connection error, a timeout or a
502/503/504 answer. Other calls are retried only when they provably never left this process (the
connection could not be made). Failures reach the caller as problems (504 for a timeout, 503 for an
unreachable service, 502 for a broken exchange), never as aiohttp exceptions.

A replica's breaker counts what says the replica cannot serve: no connection, a broken exchange, a
502 or 503. A timeout or a 504 is held against the route alone (its method and path, or the
template the caller names), in a breaker of its own per replica, so that one slow route stops
being called without the replica's other routes stopping with it (ADR 21). How many of a
callee's replicas have their breaker open (or half-open, a trial call out) is the gauge
``agora_client_breakers_open``, set when one opens or closes (ADR 34's AgoraBreakerOpen).

A replica that is stopping refuses what still reaches it after its drain with a 503 carrying
``Agora-Stopping`` (agora.app.WhileStopping): it took nothing of the request, so the call goes to
another replica whatever its method, and the refusal counts against no breaker (ADR 30).

A 503 with ``Retry-After`` is a service shedding load (orders past the checkouts it takes at
once): the replica is up and asks to be called later. It is handed back as it came, not retried
before then, and counts against no breaker (ADR 54).

Every call carries the caller's trace context (from inside a CLIENT span of its own, so the
callee's span is that span's child), the caller's bearer token and the request id. A call made
on nobody's behalf (outside any request: a background loop, a consumer) carries the service's own
credential instead (ADR 24); a service's credential that came in is never passed on.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import OrderedDict
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
import orjson
import structlog
from multidict import CIMultiDict
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from prometheus_client import Counter, Gauge
from yarl import URL

from agora import context
from agora.auth import is_service_credential
from agora.backoff import Backoff, retrying, warn
from agora.errors import BadGateway, GatewayTimeout, Problem, ServiceUnavailable
from agora.inprocess import ASGIApp, InProcessResponse, exchange, in_process
from agora.telemetry import inject

log = structlog.get_logger("agora.client")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# Answers that say "this replica cannot serve now", as opposed to "your request is wrong".
FAILURE_STATUSES = frozenset({502, 503, 504})
IDEMPOTENCY_KEY = "Idempotency-Key"
# On a 503 from a replica that is stopping and did not take the request (ADR 30).
STOPPING_HEADER = "Agora-Stopping"
# On a 503 from a replica shedding load: when to call again (ADR 54).
RETRY_AFTER = "Retry-After"
REQUEST_ID = "x-request-id"
# A callee served in this process (agora.inprocess) is named so in breakers and spans.
IN_PROCESS = "in-process://"
IN_PROCESS_ATTRIBUTE = "agora.in_process"
# Below uvicorn's 5 s keep-alive, so the client drops an idle connection before the server does
# and never sends a request down a socket the server is closing.
KEEPALIVE_SECONDS = 4.0
_TRACE_HEADERS = ("traceparent", "tracestate")
# The gateway passes bodies through still encoded, so aiohttp must not ask for an encoding the
# gateway's own caller did not ask for; between services, compressing costs more than it saves.
_NO_AUTO_HEADERS = ("Accept-Encoding",)

_T = TypeVar("_T")

CALLS = Counter(
    "agora_client_requests_total",
    "Calls to other services, by caller, callee and outcome: the class of the answer's status "
    "(2xx, 3xx, 4xx, 5xx), or error when no answer came (retries of one call count once).",
    ["service", "peer", "outcome"],
)
BREAKERS_OPEN = Gauge(
    "agora_client_breakers_open",
    "Replicas of a callee whose circuit breaker is open or half-open: calls to them are refused, "
    "but for one trial.",
    ["service", "peer"],
)


# What a streamed call gives: aiohttp's response, or the same parts of an in-process one.
Answer = aiohttp.ClientResponse | InProcessResponse


def _outcome(status: int | None) -> str:
    return "error" if status is None else f"{status // 100}xx"


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """Stops calls to one replica after repeated failures, then lets a single trial call through.

    closed --``failure_threshold`` consecutive failures--> open --``reset_timeout``--> half-open;
    half-open --the trial succeeds--> closed; half-open --the trial fails--> open.
    """

    __slots__ = (
        "_clock",
        "_failures",
        "_opened_at",
        "_state",
        "failure_threshold",
        "on_change",
        "reset_timeout",
    )

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or reset_timeout < 0:
            raise ValueError("failure_threshold must be >= 1 and reset_timeout >= 0")
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._state = BreakerState.CLOSED
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        # Called when the breaker opens or closes (not between open and half-open).
        self.on_change: Callable[[], None] | None = None

    @property
    def state(self) -> BreakerState:
        return self._state

    def allow(self) -> bool:
        """May a call go now? Once the pause is over, the first caller gets the trial call and
        everybody else keeps being refused until that trial has its verdict."""
        if self._state is BreakerState.CLOSED:
            return True
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self.reset_timeout
        ):
            self._state = BreakerState.HALF_OPEN
            return True
        return False

    def record_success(self) -> None:
        if self._state is not BreakerState.CLOSED:
            self._state = BreakerState.CLOSED
            self._changed()
        self._failures = 0

    def record_failure(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._open()
        elif self._state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._open()
        # Already open: a late failure of a call that started earlier must not extend the pause.

    def release(self) -> None:
        """The call ended without a verdict (it was cancelled): if it was the trial, the next
        call becomes the trial instead."""
        if self._state is BreakerState.HALF_OPEN:
            self._state = BreakerState.OPEN
            self._opened_at = self._clock() - self.reset_timeout

    def _open(self) -> None:
        was_closed = self._state is BreakerState.CLOSED
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._failures = 0
        if was_closed:
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


class _RouteBreakers:
    """The breakers of one replica's routes, for the failures that are a route's own.

    Least recently used first, at most ``kept``: a route not called for a while most likely has
    a closed breaker, and one forgotten errs on the side of calling, as a new one would."""

    __slots__ = ("_breakers", "_make", "kept")

    def __init__(self, make: Callable[[], CircuitBreaker], kept: int = 1000) -> None:
        self._make = make
        self.kept = kept
        self._breakers: OrderedDict[str, CircuitBreaker] = OrderedDict()

    def __getitem__(self, route: str) -> CircuitBreaker:
        breakers = self._breakers
        breaker = breakers.get(route)
        if breaker is None:
            breaker = breakers[route] = self._make()
            if len(breakers) > self.kept:
                breakers.popitem(last=False)
        else:
            breakers.move_to_end(route)
        return breaker


@dataclass(slots=True)
class _Replica:
    url: str
    breaker: CircuitBreaker
    routes: _RouteBreakers

    def admit(self, route: str, *, past_pause: bool = False) -> CircuitBreaker | None:
        """The route's breaker, when both it and the replica's let a call through now;
        ``past_pause``: the route's alone, whatever the replica's says."""
        on_route = self.routes[route]
        if not on_route.allow():
            return None
        if past_pause or self.breaker.allow():
            return on_route
        on_route.release()  # it may have granted its trial call: keep that for the next one
        return None

    def succeeded(self, on_route: CircuitBreaker) -> None:
        self.breaker.record_success()
        on_route.record_success()

    def failed(self, on_route: CircuitBreaker, status: int) -> None:
        """A timeout (504) is the route's own failure: another route of the replica may be
        answering well. Anything else (unreachable, broken off, 502, 503) is the replica's."""
        if status == GatewayTimeout.status:
            on_route.record_failure()
            self.breaker.release()
        else:
            self.breaker.record_failure()
            on_route.release()

    def gave_up(self, on_route: CircuitBreaker) -> None:
        """The call ended without a verdict (it was cancelled)."""
        self.breaker.release()
        on_route.release()


class _Replicas:
    """One service's replicas and the round-robin cursor over them."""

    __slots__ = ("_next", "name", "replicas")

    def __init__(self, name: str, replicas: list[_Replica]) -> None:
        self.name = name
        self.replicas = replicas
        self._next = 0

    def pick(
        self, route: str, avoid: _Replica | None = None, *, avoid_is_gone: bool = False
    ) -> tuple[_Replica, CircuitBreaker]:
        """The next replica whose breakers (its own and the route's) let a call through, and
        the route's breaker there, preferring a replica other than ``avoid`` (the one that just
        failed this call).

        When ``avoid`` is gone (it is stopping, or refused the connection), another replica
        whose own breaker pauses it is tried before ``avoid`` again: that one only may be down,
        while ``avoid`` surely is. So a replica back from a rollout takes the calls of the next
        one stopping even while its breaker still holds the refusals of its own restart (ADR 30).
        A route's breaker is still obeyed: a route that times out there is not waited on."""
        count = len(self.replicas)
        if count == 0:
            raise ServiceUnavailable(f"no address known for {self.name}")
        for _ in range(count):
            replica = self.replicas[self._next]
            self._next = (self._next + 1) % count
            if replica is not avoid and (on_route := replica.admit(route)) is not None:
                return replica, on_route
        if avoid_is_gone:
            for replica in self.replicas:
                if (
                    replica is not avoid
                    and (on_route := replica.admit(route, past_pause=True)) is not None
                ):
                    return replica, on_route
        if avoid is not None and (on_route := avoid.admit(route)) is not None:
            return avoid, on_route
        raise ServiceUnavailable(
            f"{self.name} is failing on every replica; calls to it resume after a pause"
        )


class _Tries:
    """The replicas one call has tried, in order, and whether the last is gone (it is stopping,
    or no connection to it was made): what the next try's replica is chosen by."""

    __slots__ = ("gone", "replicas")

    def __init__(self) -> None:
        self.replicas: list[_Replica] = []
        self.gone = False

    def next(self, callee: _Replicas, route: str) -> tuple[_Replica, CircuitBreaker]:
        last = self.replicas[-1] if self.replicas else None
        replica, on_route = callee.pick(route, last, avoid_is_gone=self.gone)
        self.replicas.append(replica)
        self.gone = False
        return replica, on_route

    @property
    def resent(self) -> int:
        return len(self.replicas) - 1


def _serves(callee: _Replicas, url: str) -> bool:
    return any(replica.url == url for replica in callee.replicas)


class _Unanswered(Exception):
    """An attempt that got no answer; ``problem`` is what the caller sees if no retry helps.
    ``sent`` is False only when the request provably never left (no connection was made)."""

    def __init__(self, problem: Problem, *, sent: bool) -> None:
        super().__init__(problem.detail)
        self.problem = problem
        self.sent = sent


class _FailureStatus(Exception):
    """An attempt answered 502/503/504; the reply is kept to be returned if no retry helps."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


class _Stopping(_FailureStatus):
    """The replica is stopping and refused the request untouched: safe to send elsewhere."""


def _said_stopping(status: int, headers: Mapping[str, str]) -> bool:
    return status == ServiceUnavailable.status and STOPPING_HEADER in headers


def _said_busy(status: int, headers: Mapping[str, str]) -> bool:
    return status == ServiceUnavailable.status and RETRY_AFTER in headers


def _retry_idempotent(error: Exception) -> bool:
    return isinstance(error, _Unanswered | _FailureStatus)


def _retry_unsent(error: Exception) -> bool:
    return isinstance(error, _Stopping) or (isinstance(error, _Unanswered) and not error.sent)


def _unanswered(error: BaseException, service: str, timeout: float) -> _Unanswered:
    # The detail may reach an end user through the gateway, so it names the service but not its
    # address; the cause stays chained for the logs and the span.
    # ConnectionTimeoutError is also a TimeoutError: it must be told apart first, because a
    # request that never got a connection is safe to send elsewhere whatever its method.
    if isinstance(error, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return _Unanswered(ServiceUnavailable(f"{service} is unreachable"), sent=False)
    if isinstance(error, TimeoutError):
        return _Unanswered(
            GatewayTimeout(f"{service} did not answer within {timeout:g} s"), sent=True
        )
    return _Unanswered(BadGateway(f"{service} broke off the exchange"), sent=True)


class ServiceClient:
    """Calls other services by name. Create one per process, ``start()`` it in the lifespan."""

    def __init__(
        self,
        service_urls: Mapping[str, Sequence[str]],
        *,
        timeout: float = 5.0,
        connect_timeout: float = 1.0,
        attempts: int = 3,
        backoff: float = 0.05,
        backoff_max: float = 1.0,
        failure_threshold: int = 5,
        reset_timeout: float = 3.0,
        pool_per_host: int = 100,
        tracer_provider: trace.TracerProvider | None = None,
        service: str = "agora",
        credential: str | None = None,
    ) -> None:
        """``timeout`` bounds each attempt (connecting, sending, reading the answer);
        ``connect_timeout`` bounds opening a connection. A failing idempotent call is tried
        ``attempts`` times in all, waiting ``backoff`` seconds (doubling, plus up to ``backoff``
        of jitter, at most ``backoff_max``) between tries. A replica's breaker opens after
        ``failure_threshold`` consecutive failures and lets a trial call through after
        ``reset_timeout`` seconds. ``service`` names the caller in the metrics; ``credential``
        is its own, sent on the calls it makes on nobody's behalf."""
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        self.service = service
        self._credential = credential
        self.service_urls = {name: list(urls) for name, urls in service_urls.items()}
        self.timeout = timeout
        self.connect_timeout = min(connect_timeout, timeout)
        self.attempts = attempts
        self.pool_per_host = pool_per_host
        # No clock of its own: attempts x timeout bound the tries.
        self._backoff = Backoff(initial=backoff, max=backoff_max, jitter=backoff, attempts=attempts)

        self._breakers: dict[str, CircuitBreaker] = {}
        self._route_breakers: dict[str, _RouteBreakers] = {}
        self._services: dict[str, _Replicas] = {}
        # Callees served in this process (agora.inprocess), each as one replica of its own.
        self._local: dict[str, _Replicas] = {}
        self._failure_threshold = failure_threshold
        self._reset_timeout = reset_timeout
        for name, urls in self.service_urls.items():
            replicas = []
            for url in urls:
                base = url.rstrip("/")
                if base not in self._breakers:
                    self._breakers[base] = self._new_breaker()
                    self._route_breakers[base] = _RouteBreakers(self._new_breaker)
                replicas.append(_Replica(base, self._breakers[base], self._route_breakers[base]))
            self._services[name] = _Replicas(name, replicas)
        for name, callee in self._services.items():
            for replica in callee.replicas:
                replica.breaker.on_change = self._breakers_changed(replica.url)
            BREAKERS_OPEN.labels(self.service, name).set(0)
        # Streamed bodies (server-sent events) may flow for as long as the callee sends them:
        # ``timeout`` bounds only the wait for the answer's head there.
        self._stream_timeout = aiohttp.ClientTimeout(sock_connect=self.connect_timeout)
        self._tracer = trace.get_tracer("agora.client", tracer_provider=tracer_provider)
        self._session: aiohttp.ClientSession | None = None
        self._connector: aiohttp.TCPConnector | None = None

    def _new_breaker(self) -> CircuitBreaker:
        return CircuitBreaker(
            failure_threshold=self._failure_threshold, reset_timeout=self._reset_timeout
        )

    def _breakers_changed(self, url: str) -> Callable[[], None]:
        """What to do when the breaker of the replica at ``url`` opens or closes: count the
        open ones again for each callee it serves (one, unless two names share an address)."""
        known = [*self._services.values(), *self._local.values()]
        callees = [callee for callee in known if _serves(callee, url)]

        def count() -> None:
            for callee in callees:
                opened = sum(r.breaker.state is not BreakerState.CLOSED for r in callee.replicas)
                BREAKERS_OPEN.labels(self.service, callee.name).set(opened)

        return count

    def breaker(self, url: str) -> CircuitBreaker:
        """The circuit breaker of the replica at ``url``."""
        return self._breakers[url.rstrip("/")]

    def route_breaker(self, url: str, method: str, route: str) -> CircuitBreaker:
        """The circuit breaker of one route (``route`` as the calls named it) at ``url``."""
        return self._route_breakers[url.rstrip("/")][_route_key(method, route)]

    async def start(self) -> None:
        if self._session is None:
            connector = self._connector = aiohttp.TCPConnector(
                limit=0,  # the per-replica limit is the one that matters
                limit_per_host=self.pool_per_host,
                keepalive_timeout=KEEPALIVE_SECONDS,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # sock_connect rather than connect: waiting for a free pooled connection under
                # load is not a sign that the replica is down.
                timeout=aiohttp.ClientTimeout(
                    total=self.timeout, sock_connect=self.connect_timeout
                ),
                # One session serves every user: a cookie one callee sets must never ride along
                # on another user's call.
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=_NO_AUTO_HEADERS,
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = self._connector = None

    async def request(
        self,
        service: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        route: str | None = None,
    ) -> Reply:
        """Call ``service`` and read its whole answer. A 502/503/504 answer that no retry
        cured is returned as it is; no answer at all raises a :class:`Problem`. ``route`` is
        the path's template (``/products/{sku}``), for the route's breaker; by default the
        path itself."""
        session = self._session or await self._started()
        local = in_process(service)
        replicas = self._replicas(service, local)
        method = method.upper()
        route_key = _route_key(method, route or path)
        out: CIMultiDict[str] = CIMultiDict(headers or {})
        data = None
        if json is not None:
            data = orjson.dumps(json)
            out.setdefault("Content-Type", "application/json")
        idempotent = method in IDEMPOTENT_METHODS or IDEMPOTENCY_KEY in out
        with self._tracer.start_as_current_span(
            f"{method} {service}",
            kind=SpanKind.CLIENT,
            attributes=_call_attributes(service, method, local),
        ) as span:
            self._propagate(out)
            tries = _Tries()

            async def attempt() -> Reply:
                replica, on_route = tries.next(replicas, route_key)
                span.set_attribute("url.full", replica.url + path)
                try:
                    if local is not None:
                        reply = await self._in_process(local, method, path, params, out, data)
                    else:
                        async with session.request(
                            method, replica.url + path, data=data, headers=out, params=params
                        ) as response:
                            reply = Reply(response.status, response.headers, await response.read())
                except (aiohttp.ClientError, TimeoutError) as error:
                    raise self._unanswered_by(tries, replica, on_route, error, service) from error
                except BaseException:
                    replica.gave_up(on_route)
                    raise
                if reply.status in FAILURE_STATUSES:
                    if _said_stopping(reply.status, reply.headers):
                        replica.gave_up(on_route)  # no verdict: it is going away in order
                        tries.gone = True
                        raise _Stopping(reply)
                    if _said_busy(reply.status, reply.headers):
                        replica.gave_up(on_route)  # no verdict: it answered, asking for later
                        return reply
                    replica.failed(on_route, reply.status)
                    raise _FailureStatus(reply)
                replica.succeeded(on_route)
                return reply

            try:
                reply = await self._retrying(
                    attempt, _retry_idempotent if idempotent else _retry_unsent
                )
            except _FailureStatus as failed:
                reply = failed.reply
            except _Unanswered as failed:
                self._count(service, None)
                raise failed.problem from failed.__cause__
            except Problem:  # every replica's breaker is open
                self._count(service, None)
                raise
            finally:
                if tries.resent:
                    span.set_attribute("http.request.resend_count", tries.resent)
            self._count(service, reply.status)
            _record_status(span, reply.status)
            return reply

    async def get_json(self, service: str, path: str) -> Any:
        reply = await self.request(service, "GET", path)
        if reply.status >= 400:
            raise ServiceUnavailable(f"{service} answered {reply.status} to GET {path}")
        return reply.json()

    def stream(
        self,
        service: str,
        method: str,
        path_qs: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes | AsyncIterable[bytes] | None = None,
        route: str | None = None,
    ) -> _Stream:
        """``async with client.stream(...) as response:`` yields an ``aiohttp.ClientResponse``
        whose body the caller reads; it is released on leaving the block.

        The gateway's way through. ``path_qs`` is sent exactly as given (already
        percent-encoded, as it arrived), so the path the gateway checked is the path the
        service gets. Any answer is passed through as it is; only a failure before the answer
        (no connection, a timeout, a broken exchange) is retried, for an idempotent method with
        a body given as bytes. ``timeout`` bounds the wait for the answer's head, not the body.
        ``route`` is the path's template, for the route's breaker (by default the path).
        """
        key = _route_key(method.upper(), route or path_qs.partition("?")[0])
        return _Stream(self, service, method, path_qs, headers, body, key)

    async def _started(self) -> aiohttp.ClientSession:
        if self._session is None:
            await self.start()
            assert self._session is not None
        return self._session

    def _replicas(self, service: str, local: ASGIApp | None = None) -> _Replicas:
        """The callee's replicas; when it runs in this process (``local``), that one alone, with
        breakers of its own."""
        if local is not None:
            return self._in_process_replica(service)
        replicas = self._services.get(service)
        if replicas is None:
            raise ServiceUnavailable(f"no address known for {service}")
        return replicas

    def _in_process_replica(self, service: str) -> _Replicas:
        replicas = self._local.get(service)
        if replicas is None:
            url = f"{IN_PROCESS}{service}"
            breaker = self._breakers[url] = self._new_breaker()
            self._route_breakers[url] = _RouteBreakers(self._new_breaker)
            replicas = self._local[service] = _Replicas(
                service, [_Replica(url, breaker, self._route_breakers[url])]
            )
            # _breakers_changed counts a callee's open breakers over the callees it knows.
            breaker.on_change = self._breakers_changed(url)
        return replicas

    async def _in_process(
        self,
        app: ASGIApp,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        headers: CIMultiDict[str],
        data: bytes | None,
    ) -> Reply:
        """One attempt at a callee in this process, bounded as an attempt over the network is."""
        url = URL(path).extend_query(params) if params else URL(path)
        async with asyncio.timeout(self.timeout):
            response = await exchange(app, method, url.raw_path_qs, headers.items(), data)
            try:
                return Reply(response.status, response.headers, await response.read())
            finally:
                response.release()

    def _unanswered_by(
        self,
        tries: _Tries,
        replica: _Replica,
        on_route: CircuitBreaker,
        error: BaseException,
        service: str,
    ) -> _Unanswered:
        """An attempt at ``replica`` that got no answer: held against the replica. When no
        connection was made, the replica is gone for the next try's choice, and its name is
        resolved again: a replaced replica (a container recreated on a Compose network) comes
        back at a new address under the same name, and the address cached from before would be
        refused for as long as it is kept."""
        unanswered = _unanswered(error, service, self.timeout)
        replica.failed(on_route, unanswered.problem.status)
        tries.gone = not unanswered.sent
        if not unanswered.sent and self._connector is not None:
            url = URL(replica.url)
            if url.host is not None and url.port is not None:
                self._connector.clear_dns_cache(url.host, url.port)
        return unanswered

    def _count(self, peer: str, status: int | None) -> None:
        """One call to ``peer`` ended: with an answer of ``status``, or none (None)."""
        CALLS.labels(self.service, peer, _outcome(status)).inc()

    def _propagate(self, out: CIMultiDict[str]) -> None:
        """Trace context, token and request id onto an outgoing call; call inside its span."""
        for name in _TRACE_HEADERS:
            out.popall(name, None)
        inject(out)
        if "Authorization" not in out:
            token = context.bearer_token.get()
            if token and not is_service_credential(token):
                out["Authorization"] = f"Bearer {token}"
            elif self._credential and context.request_id.get() is None:
                # Serving no request, the call is the service's own. Inside one it is the
                # caller's, even an anonymous one: the gateway must not lend its credential to
                # whoever it forwards.
                out["Authorization"] = f"Bearer {self._credential}"
        if (request_id := context.request_id.get()) and REQUEST_ID not in out:
            out[REQUEST_ID] = request_id

    async def _retrying(
        self, attempt: Callable[[], Awaitable[_T]], retry: Callable[[Exception], bool] | None
    ) -> _T:
        """Run ``attempt``, retrying as ``retry`` decides with stamina's jittered backoff."""
        if retry is None or self.attempts == 1:
            return await attempt()
        return await retrying(
            attempt, self._backoff, on=retry, failed=warn(log, "call failed, retrying")
        )


def _call_attributes(service: str, method: str, local: ASGIApp | None) -> dict[str, Any]:
    """A CLIENT span's first attributes; a call that stays in this process says so."""
    attributes: dict[str, Any] = {"peer.service": service, "http.request.method": method}
    if local is not None:
        attributes[IN_PROCESS_ATTRIBUTE] = True
    return attributes


def _route_key(method: str, route: str) -> str:
    return f"{method} {route}"


def _record_status(span: Span, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 400:
        span.set_status(Status(StatusCode.ERROR))


class _Stream:
    """The context manager behind :meth:`ServiceClient.stream`. Its span lasts until the
    caller has finished with the response."""

    __slots__ = (
        "_body",
        "_client",
        "_headers",
        "_method",
        "_path_qs",
        "_response",
        "_route",
        "_service",
        "_span",
    )

    def __init__(
        self,
        client: ServiceClient,
        service: str,
        method: str,
        path_qs: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | AsyncIterable[bytes] | None,
        route: str,
    ) -> None:
        self._client = client
        self._route = route
        self._service = service
        self._method = method.upper()
        self._path_qs = path_qs
        self._headers = headers
        self._body = body
        self._response: Answer | None = None
        self._span: Span | None = None

    async def __aenter__(self) -> Answer:
        client = self._client
        session = client._session or await client._started()
        local = in_process(self._service)
        replicas = client._replicas(self._service, local)
        method = self._method
        out: CIMultiDict[str] = CIMultiDict(self._headers)
        span = self._span = client._tracer.start_span(
            f"{method} {self._service}",
            kind=SpanKind.CLIENT,
            attributes=_call_attributes(self._service, method, local),
        )
        # Make the span current only while injecting (attach/detach is cheaper than use_span).
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            client._propagate(out)
        finally:
            otel_context.detach(token)
        retry: Callable[[Exception], bool] | None = None
        if self._body is None or isinstance(self._body, bytes):
            idempotent = method in IDEMPOTENT_METHODS or IDEMPOTENCY_KEY in out
            retry = _retry_idempotent if idempotent else _retry_unsent
        tries = _Tries()

        async def attempt() -> Answer:
            replica, on_route = tries.next(replicas, self._route)
            url = replica.url + self._path_qs
            span.set_attribute("url.full", url)
            response: Answer
            try:
                async with asyncio.timeout(client.timeout):
                    if local is not None:
                        response = await exchange(
                            local, method, self._path_qs, out.items(), self._body
                        )
                    else:
                        response = await session.request(
                            method,
                            URL(url, encoded=True),
                            data=self._body,
                            headers=out,
                            timeout=client._stream_timeout,
                            auto_decompress=False,
                            allow_redirects=False,
                        )
            except (aiohttp.ClientError, TimeoutError) as error:
                raise client._unanswered_by(
                    tries, replica, on_route, error, self._service
                ) from error
            except BaseException:
                replica.gave_up(on_route)
                raise
            if _said_stopping(response.status, response.headers):
                replica.gave_up(on_route)  # no verdict: it is going away in order
                tries.gone = True
                if retry is not None:
                    response.release()
                    raise _Stopping(Reply(response.status, response.headers, b""))
            elif _said_busy(response.status, response.headers):
                replica.gave_up(on_route)  # no verdict: it answered, asking for later
            elif response.status in FAILURE_STATUSES:
                replica.failed(on_route, response.status)
            else:
                replica.succeeded(on_route)
            return response

        try:
            response = self._response = await client._retrying(attempt, retry)
        except _Unanswered as error:
            client._count(self._service, None)
            self._end(error.problem)
            raise error.problem from error.__cause__
        except _Stopping as error:  # every replica tried was stopping
            client._count(self._service, None)
            problem = ServiceUnavailable(f"{self._service} is stopping on every replica tried")
            self._end(problem)
            raise problem from error
        except BaseException as error:
            if isinstance(error, Problem):  # every replica's breaker is open
                client._count(self._service, None)
            self._end(error)
            raise
        if tries.resent:
            span.set_attribute("http.request.resend_count", tries.resent)
        client._count(self._service, response.status)
        _record_status(span, response.status)
        return response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._response is not None:
            self._response.release()
            self._response = None
        self._end(exc)

    def _end(self, error: BaseException | None) -> None:
        span, self._span = self._span, None
        if span is None:
            return
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, str(error)))
        span.end()
