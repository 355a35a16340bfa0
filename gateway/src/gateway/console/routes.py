"""The operations console at ``/console``, for admins: services and their health, the service
map, traces with their logs, outboxes and dead letters, the recent events, and ``agora verify``.

Every page is rendered on the server; ``console.js`` then refreshes each section from the JSON
under ``/console/api/`` every few seconds. Everything here is read when asked for, from the
replicas themselves (see :mod:`gateway.console.collect`), except the recent events, which the
gateway follows on its own broker connection from start-up.

One router per page group (the overview, traces, dead letters and events, the invariants check),
gathered under :data:`router`, which asks every one of them for an admin.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import quote

import nats.errors
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from agora.app import Resources
from agora.auth import Principal
from agora.messaging.broker import BrokerUnavailable
from agora.messaging.deadletters import ReplayFailed, UnknownDeadLetter, replay
from consistency.checks import Report
from gateway.console import traces, verify, views
from gateway.console.sections import (
    ALL_SPANS,
    BROKER_TIMEOUT,
    LATEST_TRACES,
    SHOWN_EVENTS,
    Console,
    ConsoleDep,
    dead_letters_view,
    events_view,
    outbox_view,
    own_url,
    resources,
    services_view,
    trace_view,
    traces_view,
)
from gateway.web import PageError, PageNotFound, check_csrf, page_router, render, require_admin

Admin = Annotated[Principal, Depends(require_admin)]
CSRF = [Depends(check_csrf)]
# How many of the latest traces, or events, the JSON may be asked for.
Traces = Annotated[int, Query(ge=1, le=200)]
Events = Annotated[int, Query(ge=1, le=500)]
GONE = (
    "Spans are kept in memory, by each service, the most recent ones only: this order's have "
    "gone (or were never kept here, if a service restarted since). The order itself is unaffected."
)

# --- the overview: every section at once, and the JSON of those that are not their own group --

overview = page_router()


@overview.get("", summary="The operations console")
async def console_page(
    request: Request, console: ConsoleDep, replayed: str | None = None
) -> Response:
    (services, service_map), latest, outbox, letters = await asyncio.gather(
        services_view(console, request),
        traces_view(console, request, LATEST_TRACES),
        outbox_view(console, request),
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
            "events": events_view(console, request, SHOWN_EVENTS),
            "replayed": replayed,
            "prometheus_url": console.prometheus_url,
        },
    )


@overview.get("/api/services", summary="Every replica's health and traffic")
async def services_json(request: Request, console: ConsoleDep) -> Response:
    return JSONResponse((await services_view(console, request))[0])


@overview.get("/api/map", summary="The service map: boxes and the traffic between them")
async def map_json(request: Request, console: ConsoleDep) -> Response:
    return JSONResponse((await services_view(console, request))[1])


@overview.get("/api/outbox", summary="Every replica's outbox backlog")
async def outbox_json(request: Request, console: ConsoleDep) -> Response:
    return JSONResponse(await outbox_view(console, request))


# --- traces -------------------------------------------------------------------------------------

tracing = page_router()


@tracing.get("/traces/{trace_id}", summary="One trace: its spans and its logs")
async def trace_page(request: Request, console: ConsoleDep, trace_id: str) -> Response:
    drawn, logs = await trace_view(console, request, trace_id.lower())
    return render(
        request,
        "console/trace.html",
        {
            "trace": drawn,
            "logs": [views.log_row(line) for line in logs],
            "prometheus_url": console.prometheus_url,
        },
    )


@tracing.get("/orders/trace", summary="Find an order's trace (the form on the console)")
async def order_trace_form(order_id: Annotated[str, Query(max_length=200)] = "") -> Response:
    if not order_id.strip():
        return RedirectResponse("/console#traces", 303)
    return RedirectResponse(f"/console/orders/{quote(order_id.strip(), safe='')}/trace", 303)


@tracing.get("/orders/{order_id}/trace", summary="The trace of an order's checkout")
async def order_trace(request: Request, console: ConsoleDep, order_id: str) -> Response:
    answers = await console.collector.ask_all(
        own_url(request), "/internal/spans", {"limit": str(ALL_SPANS)}
    )
    spans = traces.parse_spans(answer.body for answer in answers)
    found = traces.trace_of_order(spans, order_id)
    if found is None:
        raise PageError(404, "No trace kept for this order", GONE)
    return RedirectResponse(f"/console/traces/{found}", 303)


@tracing.get("/api/traces", summary="The latest traces across every replica")
async def traces_json(
    request: Request, console: ConsoleDep, limit: Traces = LATEST_TRACES
) -> Response:
    return JSONResponse(await traces_view(console, request, limit))


@tracing.get("/api/traces/{trace_id}", summary="One trace's spans and logs")
async def trace_json(request: Request, console: ConsoleDep, trace_id: str) -> Response:
    drawn, logs = await trace_view(console, request, trace_id.lower())
    return JSONResponse({**drawn, "logs": [views.log_row(line) for line in logs]})


# --- messages: the dead letters and the recent events ------------------------------------------

messages = page_router()


@messages.post(
    "/dead-letters/{event_id}/replay",
    summary="Send a dead letter back to its subject",
    dependencies=CSRF,
)
async def replay_dead_letter(request: Request, event_id: str) -> Response:
    broker = resources(request).broker
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


@messages.get("/api/dead-letters", summary="The messages consumers gave up on")
async def dead_letters_json(request: Request) -> Response:
    return JSONResponse(await dead_letters_view(request))


@messages.get("/api/events", summary="The latest messages on agora.>")
async def events_json(
    request: Request, console: ConsoleDep, limit: Events = SHOWN_EVENTS
) -> Response:
    return JSONResponse(events_view(console, request, limit))


# --- the invariants, checked on demand ---------------------------------------------------------

checks = page_router()


@checks.post("/verify", summary="Check the system's invariants now", dependencies=CSRF)
async def verify_now(request: Request, admin: Admin) -> Response:
    try:
        report = await verify.run(resources(request), own_url(request), admin.token)
    except verify.VerifyFailed as error:
        return render(request, "console/verify.html", {"error": str(error)}, status=503)
    return render(request, "console/verify.html", {"report": _report_view(report)})


def _report_view(report: Report) -> Mapping[str, Any]:
    return {
        "ok": report.ok,
        "violations": [
            {"check": v.check, "subject": v.subject, "detail": v.detail} for v in report.violations
        ],
        "in_progress": len(report.in_progress),
        "awaiting_shipment": len(report.awaiting_shipment),
        "notes": report.notes,
        "counts": report.counts,
    }


# --- the console as a whole ---------------------------------------------------------------------


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Inside the chassis's start-up: the broker has begun connecting by now.
    found: Resources = app.state.resources
    console = found.get(Console)
    await console.collector.start()
    if found.broker is not None:
        await console.feed.attach(found.broker)
    try:
        yield
    finally:
        await console.feed.detach()
        await console.collector.close()


router = page_router(lifespan=_lifespan, dependencies=[Depends(require_admin)])
for _group in (overview, tracing, messages, checks):
    router.include_router(_group, prefix="/console")
