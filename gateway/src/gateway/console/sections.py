"""What the console's sections show, read when asked for: the services and their map, the latest
traces or one of them, the outboxes, the dead letters and the recent events. The pages (see
:mod:`gateway.console.routes`) render them, and ``console.js`` refreshes each from its JSON.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Annotated, Any

import nats.errors
from fastapi import Depends, Request

from agora.app import Resources
from agora.deps import provided
from agora.messaging.broker import Broker, BrokerUnavailable
from agora.messaging.credentials import without_credentials
from agora.messaging.deadletters import DeadLetter, dead_letters
from agora.topology import Topology
from gateway.console import servicemap, traces, views
from gateway.console.collect import Collector
from gateway.console.events import RecentEvents
from gateway.settings import GatewaySettings
from gateway.web import PageNotFound

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


@dataclass(slots=True)
class Console:
    """What the console reads from: the replicas (through ``collector``), the events the gateway
    follows on its own broker connection from start-up (``feed``), and each service's colour."""

    topology: Topology
    collector: Collector
    feed: RecentEvents = field(default_factory=RecentEvents)
    palette: dict[str, str] = field(default_factory=dict)
    # Where the system's metrics are kept over time, linked from every page (empty: nowhere).
    prometheus_url: str = ""

    @classmethod
    def of(cls, topology: Topology, settings: GatewaySettings) -> Console:
        return cls(
            topology,
            Collector(topology, settings),
            palette=servicemap.colours(topology),
            prometheus_url=settings.prometheus_url,
        )


ConsoleDep = Annotated[Console, Depends(provided(Console))]


def own_url(request: Request) -> str:
    """This gateway's own address, as the connection came in (not the Host a proxy set)."""
    server = request.scope.get("server")
    if server and server[1]:
        host, port = server
        host = f"[{host}]" if ":" in host else host
        return f"{request.scope.get('scheme', 'http')}://{host}:{port}"
    return str(request.base_url).rstrip("/")


def resources(request: Request) -> Resources:
    found: Resources = request.app.state.resources
    return found


async def services_view(
    console: Console, request: Request
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The services' health and traffic, and the service map drawn from them."""
    overview = await console.collector.overview(own_url(request))
    drawn = servicemap.draw(console.topology, overview.flows)
    health = views.service_health(overview)
    return views.services(overview), views.service_map(drawn, health)


async def traces_view(console: Console, request: Request, limit: int) -> dict[str, Any]:
    answers = await console.collector.ask_all(
        own_url(request), "/internal/spans", {"limit": str(RECENT_SPANS)}
    )
    spans = traces.parse_spans(answer.body for answer in answers)
    return views.traces(traces.latest_traces(spans, limit), answers)


async def outbox_view(console: Console, request: Request) -> dict[str, Any]:
    return views.outboxes(await console.collector.ask_all(own_url(request), "/internal/outbox"))


async def dead_letters_view(request: Request) -> dict[str, Any]:
    state, letters = await _dead_letters(resources(request).broker)
    return {"broker": state, "dead_letters": [_letter_row(letter) for letter in letters]}


def events_view(console: Console, request: Request, limit: int) -> dict[str, Any]:
    broker = resources(request).broker
    if broker is None:
        state = "no broker configured: no events to follow"
    elif not broker.connected:
        state = f"not connected to the broker at {without_credentials(broker.url)}"
    else:
        state = "following agora.>"
    feed = console.feed
    return views.events(feed.latest(limit), subscribed=feed.subscribed, broker=state)


async def trace_view(
    console: Console, request: Request, trace_id: str
) -> tuple[dict[str, Any], list[Any]]:
    """One trace drawn as a waterfall, and its log lines."""
    if not TRACE_ID.match(trace_id):
        raise PageNotFound("A trace id is 32 hexadecimal digits.")
    own = own_url(request)
    span_answers, log_answers = await asyncio.gather(
        console.collector.ask_all(
            own, "/internal/spans", {"trace_id": trace_id, "limit": str(ALL_SPANS)}
        ),
        console.collector.ask_all(
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
    drawn = views.waterfall(traces.waterfall(trace_id, spans), console.palette)
    drawn["unreachable"] = views.unreachable([*span_answers, *log_answers])
    return drawn, traces.log_lines(answer.body for answer in log_answers)


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
