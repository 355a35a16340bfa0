"""The operations console at ``/console``, for admins: services and their health, the service
map, traces with their logs, outboxes and dead letters, the recent events, and ``agora verify``.

Every page is rendered on the server; ``console.js`` then refreshes each section from the JSON
under ``/console/api/`` every few seconds. Everything here is read when asked for, from the
replicas themselves (see :mod:`gateway.console.collect`), except the recent events, which the
gateway follows on its own broker connection from start-up.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import quote

import nats.errors
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from agora.app import Resources
from agora.auth import Principal
from agora.messaging.broker import Broker, BrokerUnavailable
from agora.messaging.credentials import without_credentials
from agora.messaging.deadletters import (
    DeadLetter,
    ReplayFailed,
    UnknownDeadLetter,
    dead_letters,
    replay,
)
from agora.topology import Topology
from consistency.checks import Report
from gateway.console import servicemap, traces, verify, views
from gateway.console.collect import Collector
from gateway.console.events import RecentEvents
from gateway.settings import GatewaySettings
from gateway.web import PageError, PageNotFound, check_csrf, page_router, render, require_admin

Admin = Annotated[Principal, Depends(require_admin)]

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
# How many spans each replica is asked for: its newest, enough for the latest traces...
RECENT_SPANS = 500
# ...and as many as it keeps, when looking for one trace or one order.
ALL_SPANS = 2000
TRACE_LOGS = 500
LATEST_TRACES = 25
SHOWN_EVENTS = 50
# Listing dead letters walks every stream: bounded, so a slow broker cannot hold a page.
BROKER_TIMEOUT = 3.0
GONE = (
    "Spans are kept in memory, by each service, the most recent ones only: this order's have "
    "gone (or were never kept here, if a service restarted since). The order itself is unaffected."
)


def own_url(request: Request) -> str:
    """This gateway's own address, as the connection came in (not the Host a proxy set)."""
    server = request.scope.get("server")
    if server and server[1]:
        host, port = server
        host = f"[{host}]" if ":" in host else host
        return f"{request.scope.get('scheme', 'http')}://{host}:{port}"
    return str(request.base_url).rstrip("/")


def console_router(topology: Topology, settings: GatewaySettings) -> APIRouter:
    collector = Collector(topology, settings)
    feed = RecentEvents()
    palette = servicemap.colours(topology)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Inside the chassis's start-up: the broker has begun connecting by now.
        await collector.start()
        broker: Broker | None = app.state.resources.broker
        if broker is not None:
            await feed.attach(broker)
        try:
            yield
        finally:
            await feed.detach()
            await collector.close()

    router = page_router(
        prefix="/console", lifespan=lifespan, dependencies=[Depends(require_admin)]
    )

    # --- what the sections show ---------------------------------------------------------------

    async def services_view(request: Request) -> tuple[dict[str, Any], dict[str, Any]]:
        overview = await collector.overview(own_url(request))
        drawn = servicemap.draw(topology, overview.flows)
        health = views.service_health(overview)
        return views.services(overview), views.service_map(drawn, health)

    async def traces_view(request: Request, limit: int) -> dict[str, Any]:
        answers = await collector.ask_all(
            own_url(request), "/internal/spans", {"limit": str(RECENT_SPANS)}
        )
        spans = traces.parse_spans(answer.body for answer in answers)
        return views.traces(traces.latest_traces(spans, limit), answers)

    async def outbox_view(request: Request) -> dict[str, Any]:
        return views.outboxes(await collector.ask_all(own_url(request), "/internal/outbox"))

    async def dead_letters_view(request: Request) -> dict[str, Any]:
        broker = _resources(request).broker
        state, letters = await _dead_letters(broker)
        return {"broker": state, "dead_letters": [_letter_row(letter) for letter in letters]}

    def events_view(request: Request, limit: int) -> dict[str, Any]:
        broker = _resources(request).broker
        if broker is None:
            state = "no broker configured: no events to follow"
        elif not broker.connected:
            state = f"not connected to the broker at {without_credentials(broker.url)}"
        else:
            state = "following agora.>"
        return views.events(feed.latest(limit), subscribed=feed.subscribed, broker=state)

    # --- pages ----------------------------------------------------------------------------

    @router.get("", summary="The operations console")
    async def console(request: Request, replayed: str | None = None) -> Response:
        (services, service_map), latest, outbox, letters = await asyncio.gather(
            services_view(request),
            traces_view(request, LATEST_TRACES),
            outbox_view(request),
            dead_letters_view(request),
        )
        return render(
            request,
            "console/index.html",
            {
                "services": services,
                "map": service_map,
                "traces": latest,
                "outbox": outbox,
                "letters": letters,
                "events": events_view(request, SHOWN_EVENTS),
                "replayed": replayed,
            },
        )

    @router.get("/traces/{trace_id}", summary="One trace: its spans and its logs")
    async def trace_page(request: Request, trace_id: str) -> Response:
        drawn, logs = await _trace(request, trace_id.lower())
        return render(
            request,
            "console/trace.html",
            {"trace": drawn, "logs": [views.log_row(line) for line in logs]},
        )

    @router.get("/orders/trace", summary="Find an order's trace (the form on the console)")
    async def order_trace_form(order_id: Annotated[str, Query(max_length=200)] = "") -> Response:
        if not order_id.strip():
            return RedirectResponse("/console#traces", 303)
        return RedirectResponse(f"/console/orders/{quote(order_id.strip(), safe='')}/trace", 303)

    @router.get("/orders/{order_id}/trace", summary="The trace of an order's checkout")
    async def order_trace(request: Request, order_id: str) -> Response:
        answers = await collector.ask_all(
            own_url(request), "/internal/spans", {"limit": str(ALL_SPANS)}
        )
        spans = traces.parse_spans(answer.body for answer in answers)
        found = traces.trace_of_order(spans, order_id)
        if found is None:
            raise PageError(404, "No trace kept for this order", GONE)
        return RedirectResponse(f"/console/traces/{found}", 303)

    @router.post(
        "/dead-letters/{event_id}/replay",
        summary="Send a dead letter back to its subject",
        dependencies=[Depends(check_csrf)],
    )
    async def replay_dead_letter(request: Request, event_id: str) -> Response:
        broker = _resources(request).broker
        try:
            if broker is None:
                raise BrokerUnavailable("no broker is configured")
            async with asyncio.timeout(BROKER_TIMEOUT):
                await replay(broker.js, event_id)
        except UnknownDeadLetter as error:
            raise PageNotFound("No dead letter has this id: replayed already?") from error
        except (ReplayFailed, ValueError) as error:
            raise PageError(409, "Not replayed", str(error)) from error
        except (BrokerUnavailable, TimeoutError, nats.errors.Error) as error:
            raise PageError(
                503, "Broker unavailable", f"The dead letter was kept: {error or 'timed out'}."
            ) from error
        return RedirectResponse(f"/console?replayed={quote(event_id, safe='')}#dead-letters", 303)

    @router.post(
        "/verify",
        summary="Check the system's invariants now",
        dependencies=[Depends(check_csrf)],
    )
    async def verify_now(request: Request, admin: Admin) -> Response:
        try:
            report = await verify.run(_resources(request), own_url(request), admin.token)
        except verify.VerifyFailed as error:
            return render(request, "console/verify.html", {"error": str(error)}, status=503)
        return render(request, "console/verify.html", {"report": _report_view(report)})

    # --- the JSON the page refreshes from -----------------------------------------------------

    @router.get("/api/services", summary="Every replica's health and traffic")
    async def services_json(request: Request) -> Response:
        return JSONResponse((await services_view(request))[0])

    @router.get("/api/map", summary="The service map: boxes and the traffic between them")
    async def map_json(request: Request) -> Response:
        return JSONResponse((await services_view(request))[1])

    @router.get("/api/traces", summary="The latest traces across every replica")
    async def traces_json(
        request: Request, limit: Annotated[int, Query(ge=1, le=200)] = LATEST_TRACES
    ) -> Response:
        return JSONResponse(await traces_view(request, limit))

    @router.get("/api/traces/{trace_id}", summary="One trace's spans and logs")
    async def trace_json(request: Request, trace_id: str) -> Response:
        drawn, logs = await _trace(request, trace_id.lower())
        return JSONResponse({**drawn, "logs": [views.log_row(line) for line in logs]})

    @router.get("/api/outbox", summary="Every replica's outbox backlog")
    async def outbox_json(request: Request) -> Response:
        return JSONResponse(await outbox_view(request))

    @router.get("/api/dead-letters", summary="The messages consumers gave up on")
    async def dead_letters_json(request: Request) -> Response:
        return JSONResponse(await dead_letters_view(request))

    @router.get("/api/events", summary="The latest messages on agora.>")
    async def events_json(
        request: Request, limit: Annotated[int, Query(ge=1, le=500)] = SHOWN_EVENTS
    ) -> Response:
        return JSONResponse(events_view(request, limit))

    async def _trace(request: Request, trace_id: str) -> tuple[dict[str, Any], list[Any]]:
        if not TRACE_ID.match(trace_id):
            raise PageNotFound("A trace id is 32 hexadecimal digits.")
        own = own_url(request)
        span_answers, log_answers = await asyncio.gather(
            collector.ask_all(
                own, "/internal/spans", {"trace_id": trace_id, "limit": str(ALL_SPANS)}
            ),
            collector.ask_all(
                own, "/internal/logs", {"trace_id": trace_id, "limit": str(TRACE_LOGS)}
            ),
        )
        spans = [
            span
            for span in traces.parse_spans(answer.body for answer in span_answers)
            if span.trace_id == trace_id
        ]
        if not spans:
            raise PageNotFound(
                "No service keeps a span of this trace: spans are kept in memory, the most "
                "recent ones only, so it may have gone."
            )
        drawn = views.waterfall(traces.waterfall(trace_id, spans), palette)
        drawn["unreachable"] = views.unreachable([*span_answers, *log_answers])
        return drawn, traces.log_lines(answer.body for answer in log_answers)

    return router


def _resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


async def _dead_letters(broker: Broker | None) -> tuple[dict[str, str], list[DeadLetter]]:
    """The dead letters, and what to say when they cannot be listed."""
    if broker is None:
        return {"state": "unconfigured", "detail": "No broker is configured."}, []
    where = without_credentials(broker.url)
    if not broker.connected:
        detail = f"Not connected to the broker at {where} (yet): dead letters cannot be listed."
        return {"state": "disconnected", "detail": detail}, []
    try:
        async with asyncio.timeout(BROKER_TIMEOUT):
            letters = await dead_letters(broker.js)
    except (BrokerUnavailable, TimeoutError, nats.errors.Error) as error:
        detail = f"The broker at {where} did not list them: {error or 'timed out'}."
        return {"state": "error", "detail": detail}, []
    return {"state": "connected", "detail": f"Connected to {where}."}, letters


def _letter_row(letter: DeadLetter) -> dict[str, Any]:
    row = letter.as_json()
    row["shown"] = {"time": letter.time.strftime("%Y-%m-%d %H:%M:%S") if letter.time else "—"}
    return row


def _report_view(report: Report) -> Mapping[str, Any]:
    return {
        "ok": report.ok,
        "violations": [
            {"check": v.check, "subject": v.subject, "detail": v.detail} for v in report.violations
        ],
        "in_progress": len(report.in_progress),
        "counts": report.counts,
    }
