"""The service app factory: what every Agora service gets in one call.

``create_service_app`` returns a FastAPI app with ``/livez``, ``/readyz``, ``/metrics``,
``/openapi.json`` and the console's ``/internal/...`` (see :mod:`agora.observe`); problem-details
answers for every error; the request middleware (request id, trace span, metrics, access log, body
cap); JSON logs; migrations applied before the first request (unless they ran before the process
started: ``migrate_on_start``, ADR 50); one pooled service client, carrying the service's own
credential where it calls on nobody's behalf; token verification against identity's key set,
fetched when a token first needs it, so that a service starts whether identity is up or not; and
the operator's token checked on ``/internal/*`` (ADR 24).

A service states what it is once, in its bootstrap, as a :class:`ServiceDefinition`, and hands it
over with what its settings and tests choose (ADR 37).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from agora import context
from agora.auth import OperatorGuard, ServiceCredentials, TokenVerifier, operator_token
from agora.client import STOPPING_HEADER, ServiceClient
from agora.db import UnitOfWork
from agora.errors import PROBLEM_JSON, Problem, problem_body, slug
from agora.logs import configure_logging
from agora.messaging.broker import Broker
from agora.messaging.relay import Relay, has_outbox
from agora.messaging.subscriptions import Subscription
from agora.middleware import RequestContext
from agora.observe import SERVICE_INFO, internal_router
from agora.settings import ServiceSettings
from agora.tasks import cancel_and_wait
from agora.telemetry import configure_tracing

if TYPE_CHECKING:
    from agora.messaging.consumer import Consumers

log = structlog.get_logger("agora.app")

Hook = Callable[["Resources"], Awaitable[None]]
Check = Callable[[], Awaitable[None]]
JWKS_PATH = "/.well-known/jwks.json"

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S", bound=ServiceSettings)


@dataclass
class Resources:
    """What a service's routes and hooks reach through ``request.app.state.resources``."""

    settings: ServiceSettings
    uow: UnitOfWork | None
    client: ServiceClient
    verifier: TokenVerifier | None
    broker: Broker | None = None
    # This process's own credential and the services that may call it (agora.deps.CallingService).
    credentials: ServiceCredentials = field(default_factory=ServiceCredentials)
    started_at: float = field(default_factory=time.time)
    # What bootstrap chose for the routes and hooks, one value per class (see ``provide``).
    provided: dict[type, object] = field(default_factory=dict, repr=False)
    # When the process was asked to stop (agora.server.GracefulServer), by time.monotonic():
    # /readyz answers 503 from then on (ADR 30).
    stopping_since: float | None = None

    def provide(self, value: object) -> None:
        """Keep ``value`` for :meth:`get` under its own class, replacing one provided before.

        A service provides one ``application.Parts`` (its repositories, clients, clock and rules),
        and routes ask for it with ``agora.deps.provided``; a test replaces it the same way.
        """
        self.provided[type(value)] = value

    def get(self, kind: type[T]) -> T:
        """What was provided of class ``kind``; ``LookupError`` when nothing was."""
        found = self.provided.get(kind)
        if not isinstance(found, kind):
            raise LookupError(f"bootstrap provided no {kind.__qualname__}")
        return found

    @property
    def stopping(self) -> bool:
        return self.stopping_since is not None

    def stop(self) -> None:
        if self.stopping_since is None:
            self.stopping_since = time.monotonic()


def with_provided(kind: type[T], use: Callable[[T], R]) -> Callable[[Resources], R]:
    """``use`` of what bootstrap provided of class ``kind``, looked up when the resources are
    handed over: ``subscriptions=with_provided(application.Parts, entrypoints.subscriptions)``
    builds the subscriptions, when messaging starts, from the ``Parts`` provided after the app."""

    def using(resources: Resources) -> R:
        return use(resources.get(kind))

    return using


@dataclass(frozen=True)
class ServiceDefinition:
    """What a service is, whatever its settings: the title and description of its OpenAPI
    document, its routes, the HTTP status of each of its domain errors (answered as problem
    details, :mod:`agora.errors`) and its Alembic migrations, applied before the first request
    (ADR 3). A service's bootstrap states it once, at module level::

        SERVICE = ServiceDefinition(
            title="Agora cart",
            description="One open cart per user ...",
            routers=[entrypoints.router],
            errors={domain.ProductNotFound: 404},
            migrations=MIGRATIONS,
        )

    and ``create_service_app(settings, SERVICE, ...)`` adds what the settings and the tests choose.
    """

    title: str
    description: str = ""
    routers: Sequence[APIRouter] = ()
    errors: Mapping[type[Exception], int] = field(default_factory=dict)
    migrations: Path | None = None


class Migrate(Generic[S]):
    """A service's ``migrate``, what ``agora-service migrate NAME`` runs before the replicas start:
    ``migrate = Migrate(CartSettings, MIGRATIONS)`` brings the database the settings name (read
    from the environment unless given) up to date."""

    def __init__(self, settings: Callable[[], S], migrations: Path) -> None:
        self._settings = settings
        self._migrations = migrations

    def __call__(self, settings: S | None = None) -> None:
        _upgrade((settings or self._settings()).database_url, self._migrations)


def _upgrade(url: str, migrations: Path) -> None:
    # Imported here: Alembic is for the processes that migrate, and a service's own start
    # does not when the migrations ran before it (settings.migrate_on_start, ADR 50).
    from agora.migrations import upgrade

    upgrade(url, migrations)


def create_service_app(
    settings: ServiceSettings,
    service: ServiceDefinition,
    *,
    on_startup: Sequence[Hook] = (),
    on_shutdown: Sequence[Hook] = (),
    readiness: Mapping[str, Check] | None = None,
    verifier: TokenVerifier | None = None,
    use_database: bool = True,
    subscriptions: Sequence[Subscription] | Callable[[Resources], Sequence[Subscription]] = (),
    background: Sequence[Hook] = (),
    private_metrics: bool = False,
) -> FastAPI:
    """Build the app of the ``service`` its definition describes. Nothing connects until the
    app starts (rule 8).

    ``private_metrics`` puts ``/metrics`` behind the operator's token like ``/internal/*``: for
    the gateway, whose port is the public door. A service's port is inside the system, and its
    ``/metrics`` stays open there for Prometheus.

    ``subscriptions`` may be a function of the resources, called once messaging starts: a
    service's subscriptions then use the ``Parts`` bootstrap provided after this call, such as
    clients made with this app's service client.

    ``background`` are a service's own loops (a saga's deadline timer, a worker calling an
    outside system): each runs for the app's life once messaging has started, is restarted after
    a pause when it fails, and is cancelled at shutdown.
    """
    name = settings.service_name
    configure_logging(
        name, level=settings.log_level, fmt=settings.log_format, replica=settings.replica
    )
    configure_tracing(
        name,
        version=settings.version,
        replica=settings.replica,
        trace_statements=settings.trace_statements,
    )
    uow = (
        UnitOfWork(
            settings.database_url,
            source=name,
            synchronous=settings.sqlite_synchronous,
            trace_statements=settings.trace_statements,
        )
        if use_database
        else None
    )
    SERVICE_INFO.labels(name, settings.version, str(settings.replica)).set(1)
    credentials = ServiceCredentials.from_settings(settings)
    client = ServiceClient(
        settings.service_urls,
        timeout=settings.client_timeout,
        service=name,
        credential=credentials.own,
    )
    if verifier is None and "identity" in settings.service_urls:
        verifier = TokenVerifier(
            lambda: client.get_json("identity", JWKS_PATH),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
    broker = (
        Broker(
            settings.nats_url,
            name=f"{name}-{settings.replica}",
            credentials=settings.nats_credentials,
        )
        if settings.nats_url
        else None
    )
    resources = Resources(
        settings=settings,
        uow=uow,
        client=client,
        verifier=verifier,
        broker=broker,
        credentials=credentials,
    )
    operator = OperatorGuard(operator_token(settings))
    checks: dict[str, Check] = {}
    if uow is not None:
        checks["database"] = uow.ping
    checks.update(readiness or {})
    # Reported, but not a reason to leave rotation: writes go on while the broker is away, the
    # outbox holds their events (rule 3).
    informational: dict[str, Check] = {"broker": broker.check} if broker is not None else {}
    tasks: list[asyncio.Task[None]] = []
    relays: list[tuple[Relay, asyncio.Task[None]]] = []
    consuming: list[tuple[Consumers, asyncio.Task[None]]] = []

    async def start_messaging() -> None:
        if broker is None:
            return
        publishes = uow is not None and await uow.query(has_outbox)
        if publishes:
            broker.on_connect(lambda: broker.ensure_stream(name))
        await broker.start()
        if publishes:
            assert uow is not None
            relay = Relay.of_service(uow, broker, settings, service=name)
            uow.after_commit(relay.wake)
            # Wake on every (re)connection: what piled up while the broker was away goes at once.
            broker.on_connect(_as_coroutine(relay.wake))
            relay_task = asyncio.create_task(relay.run(), name=f"{name}:relay")
            tasks.append(relay_task)
            relays.append((relay, relay_task))
        subscribed = subscriptions(resources) if callable(subscriptions) else subscriptions
        if subscribed:
            from agora.messaging.consumer import Consumers

            assert uow is not None, "a service with subscriptions needs its database"
            consumers = Consumers(
                name,
                uow,
                broker,
                subscribed,
                ack_wait=settings.ack_wait,
                max_deliver=settings.max_deliver,
                backoff=settings.redelivery_backoff,
            )
            consumers_task = asyncio.create_task(consumers.run(), name=f"{name}:consumers")
            tasks.append(consumers_task)
            consuming.append((consumers, consumers_task))

    async def stop_messaging() -> None:
        # In order, within half the stop's bound (agora.server gives the requests the other
        # half): the consumers finish and ack the messages in hand, then the relay publishes
        # what they and the requests committed (ADR 30).
        deadline = time.monotonic() + max(0.1, (settings.stop_timeout - settings.stop_drain) / 2)
        for consumers, consumers_task in consuming:
            await consumers.stop(deadline - time.monotonic())
            await cancel_and_wait([consumers_task])
        for relay, relay_task in relays:
            await cancel_and_wait([relay_task])
            await relay.flush(max(0.1, deadline - time.monotonic()))
        await cancel_and_wait(tasks)
        if broker is not None:
            await broker.close()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            if uow is not None and service.migrations is not None and settings.migrate_on_start:
                await asyncio.to_thread(_upgrade, settings.database_url, service.migrations)
            await client.start()
            for hook in on_startup:
                await hook(resources)
            await start_messaging()
            for loop in background:
                tasks.append(
                    asyncio.create_task(_keep_running(loop, resources), name=loop.__name__)
                )
            log.info(
                "serving", host=settings.host, port=settings.port, database=uow and uow.backend
            )
            yield
        finally:
            await stop_messaging()
            for hook in on_shutdown:
                await hook(resources)
            await client.close()
            if uow is not None:
                await uow.dispose()

    app = FastAPI(
        title=service.title,
        description=service.description,
        version=settings.version,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        # The chassis middleware makes the one server span per request (the gateway, which is
        # not all FastAPI routes, needs it too); FastAPI's own would double every span.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.resources = resources
    install_problem_handlers(app, service.errors)
    document_problems(app)
    for router in service.routers:
        app.include_router(router)
    # After the service's own routes: the router tries routes in order and each miss costs
    # several microseconds, so the routes every request wants come first, and the probes,
    # scrapes and console reads, a few a second, last.
    app.include_router(
        _probes(
            checks, informational, settings, metrics_guard=operator if private_metrics else None
        )
    )
    app.include_router(internal_router(settings, uow, operator))
    app.add_middleware(WhileStopping, resources=resources)
    app.add_middleware(RequestContext, service=name, max_body_bytes=settings.max_body_bytes)
    return app


STOPPING = "/problems/stopping"
_PROBES = frozenset({"/livez", "/readyz"})


class WhileStopping:
    """What a stopping replica answers (ADR 30). During the drain it serves as ever, but
    closes each connection after its answer (``Connection: close``), so that callers' pools let
    go of it and their next calls open connections to a replica that stays. A request still
    reaching it after the drain is refused, untouched, with a 503 of type ``/problems/stopping``
    marked ``Agora-Stopping`` (agora.client): a caller may send it to another replica whatever
    its method, and holds it against no breaker."""

    def __init__(self, app: Any, *, resources: Resources) -> None:
        self.app = app
        self.resources = resources

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        since = self.resources.stopping_since
        if since is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        drained = time.monotonic() - since >= self.resources.settings.stop_drain
        if drained and scope["path"] not in _PROBES:
            body = problem_body(
                503,
                "Stopping",
                detail="this replica is stopping; another one serves the request",
                type_=STOPPING,
                instance=scope["path"],
                request_id=context.request_id.get(),
            )
            response = Response(
                body,
                status_code=503,
                media_type=PROBLEM_JSON,
                headers={"Connection": "close", STOPPING_HEADER: "1"},
            )
            await response(scope, receive, send)
            return

        async def closing(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != b"connection"
                ]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, closing)


async def _keep_running(loop: Hook, resources: Resources) -> None:
    pause = 0.1
    while True:
        started = time.monotonic()
        try:
            await loop(resources)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background loop failed, restarting", loop=loop.__name__)
        # A loop that ran a while before failing restarts at once; one failing at once backs off.
        pause = 0.1 if time.monotonic() - started > 30 else min(pause * 2, 5.0)
        await asyncio.sleep(pause)


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; `request_id` finds the request in the logs.",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
    },
    "additionalProperties": True,
}


def document_problems(app: FastAPI) -> None:
    """Make the OpenAPI document say what the service answers when it refuses: every refusal
    is ``application/problem+json`` (FastAPI would document a 422 of its own shape), and any
    operation may refuse (the ``default`` answer), since auth, paging and lookups are checked
    at every route."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = plain()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = PROBLEM_SCHEMA
        problem = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                answers = operation.setdefault("responses", {})
                for status, answer in answers.items():
                    if status.startswith(("4", "5")):
                        answer["content"] = problem
                answers["default"] = {
                    "description": "A problem: the request was refused or could not be served.",
                    "content": problem,
                }
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to replace it


def _as_coroutine(callback: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        callback()

    return call


async def _run_checks(checks: Mapping[str, Check]) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for check_name, check in checks.items():
        try:
            await asyncio.wait_for(check(), timeout=2.0)
            results[check_name] = {"ok": True}
        except Exception as error:
            results[check_name] = {"ok": False, "error": str(error) or type(error).__name__}
    return results


def _probes(
    checks: Mapping[str, Check],
    informational: Mapping[str, Check],
    settings: ServiceSettings,
    *,
    metrics_guard: OperatorGuard | None = None,
) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/livez")
    async def livez() -> dict[str, str]:
        return {"status": "alive"}

    @router.get("/readyz")
    async def readyz(request: Request) -> Response:
        if request.app.state.resources.stopping:
            # Out of rotation at once: the checks do not matter any more.
            body = {
                "status": "stopping",
                "reason": "stopping",
                "service": settings.service_name,
                "version": settings.version,
                "replica": settings.replica,
                "checks": {},
            }
            return JSONResponse(body, status_code=503)
        results = await _run_checks(checks)
        ready = all(result["ok"] for result in results.values())
        for check_name, result in (await _run_checks(informational)).items():
            results[check_name] = {**result, "required": False}
        body = {
            "status": "ready" if ready else "not ready",
            "service": settings.service_name,
            "version": settings.version,
            "replica": settings.replica,
            "checks": results,
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    own = OwnSeries(settings.service_name)

    @router.get("/metrics", dependencies=[Depends(metrics_guard)] if metrics_guard else [])
    async def metrics() -> Response:
        return Response(generate_latest(own), media_type=CONTENT_TYPE_LATEST)

    return router


class OwnSeries:
    """The process's metrics as one service of it shows them on its ``/metrics``: of the series
    labelled with a ``service``, that service's own. A process holds one service's series, unless
    it is a group's (ADR 53): then each member's port shows its own, and Prometheus, scraping
    every member, counts each series once. Series of the process itself (its CPU, memory,
    streams) have no such label and show on every member's."""

    def __init__(self, service: str, registry: CollectorRegistry = REGISTRY) -> None:
        self.service = service
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            samples = [
                s for s in family.samples if s.labels.get("service", self.service) == self.service
            ]
            if samples or not family.samples:
                own = Metric(family.name, family.documentation, family.type, family.unit)
                own.samples = samples
                yield own


def problem_response(
    request: Request,
    status: int,
    title: str,
    *,
    detail: str | None = None,
    type_: str = "about:blank",
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> Response:
    body = problem_body(
        status,
        title,
        detail=detail,
        type_=type_,
        instance=request.url.path,
        request_id=context.request_id.get(),
        **extensions,
    )
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _problem_headers(status: int, error: Exception) -> dict[str, str] | None:
    """The headers HTTP asks of a status: a 401 names its scheme; a domain error that knows
    when to come back (a ``retry_after`` in seconds or as a timedelta) says so."""
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="agora"'
    retry_after = getattr(error, "retry_after", None)
    if isinstance(retry_after, timedelta):
        retry_after = retry_after.total_seconds()
    if isinstance(retry_after, int | float):
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return headers or None


def _allowed_methods(request: Request) -> list[str]:
    """The methods the document names at the request's path (RFC 9110 15.5.6): Starlette's 405
    names only those of the first route that matched the path, and FastAPI makes a route per
    method. As OpenAPI matches paths, a concrete one (``/products/batch``) comes before a
    templated one (``/products/{sku}``). An undocumented path (a probe, ``/internal``) keeps
    Starlette's answer."""
    paths: dict[str, dict[str, Any]] = request.app.openapi().get("paths", {})
    matching = [template for template in paths if compile_path(template)[0].match(request.url.path)]
    fewest = min((template.count("{") for template in matching), default=0)
    return sorted(
        method.upper()
        for template in matching
        if template.count("{") == fewest
        for method in paths[template]
        if method.upper() in _METHODS
    )


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})


def install_problem_handlers(app: FastAPI, errors: Mapping[type[Exception], int]) -> None:
    """Answer every error with RFC 9457 problem details; map domain errors by class."""

    async def on_problem(request: Request, error: Exception) -> Response:
        assert isinstance(error, Problem)
        return problem_response(
            request,
            error.status,
            error.title,
            detail=error.detail,
            type_=error.type,
            headers=error.headers,
        )

    async def on_validation(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        issues = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in error.errors()
        ]
        if any(issue["type"] == "json_invalid" for issue in issues):
            return problem_response(
                request,
                400,
                "Malformed JSON",
                detail="the request body is not valid JSON",
                type_="/problems/malformed-json",
                errors=issues,
            )
        return problem_response(
            request,
            422,
            "Invalid request",
            detail="the request does not match the schema",
            type_="/problems/validation",
            errors=issues,
        )

    async def on_http(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        titles = {404: "Not found", 405: "Method not allowed", 401: "Authentication required"}
        headers = dict(error.headers) if error.headers else {}
        allowed = _allowed_methods(request) if error.status_code == 405 else None
        if allowed:
            headers["Allow"] = ", ".join(allowed)
        return problem_response(
            request,
            error.status_code,
            titles.get(error.status_code, "Request failed"),
            detail=str(error.detail) if error.detail else None,
            headers=headers or None,
        )

    def on_domain(status: int) -> Callable[[Request, Exception], Awaitable[Response]]:
        async def handler(request: Request, error: Exception) -> Response:
            name = type(error).__name__
            title = (type(error).__doc__ or name).strip().splitlines()[0].rstrip(".")
            return problem_response(
                request,
                status,
                title,
                detail=str(error) or None,
                type_=f"/problems/{slug(name)}",
                headers=_problem_headers(status, error),
            )

        return handler

    async def on_crash(request: Request, error: Exception) -> Response:
        log.exception("unhandled error", path=request.url.path)
        return problem_response(request, 500, "Internal error", detail="the error was logged")

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    for error_class, status in errors.items():
        app.add_exception_handler(error_class, on_domain(status))
    app.add_exception_handler(Exception, on_crash)
