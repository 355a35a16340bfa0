"""The console's data as the pages show it: plain dicts, numbers already written out for people
(``1.2/s``, ``3 h 12 min``), the same for the server-rendered page and for ``console.js``, which
redraws each section from the JSON endpoints without formatting anything itself."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.console.collect import Answer, Overview, ReplicaView
from gateway.console.events import SeenEvent
from gateway.console.servicemap import ServiceMap
from gateway.console.traces import TraceSummary, Waterfall

DASH = "—"
# The fields every log line has, shown in their own columns; the rest go in "details".
_LOG_COLUMNS = frozenset(
    {"timestamp", "level", "event", "service", "replica", "trace_id", "span_id", "logger"}
)
_DETAIL_LENGTH = 300


def rate(value: float | None) -> str:
    return DASH if value is None else f"{value:.1f}/s"


def share(value: float | None) -> str:
    return DASH if value is None else f"{value * 100:.1f} %"


def milliseconds(value: float | None) -> str:
    if value is None:
        return DASH
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


def seconds(value: float | None) -> str:
    """``42 s``, ``12 min``, ``3 h 12 min``, ``2 d 4 h``."""
    if value is None:
        return DASH
    whole = int(value)
    if whole < 60:
        return f"{whole} s"
    minutes, hours, days = whole // 60, whole // 3600, whole // 86400
    if hours < 1:
        return f"{minutes} min"
    if days < 1:
        return f"{hours} h {minutes % 60} min"
    return f"{days} d {hours % 24} h"


def clock(unix: float | None) -> str:
    """``14:03:07.251`` (UTC): when, to the millisecond, for lines of the same minute."""
    if unix is None:
        return DASH
    return datetime.fromtimestamp(unix, UTC).strftime("%H:%M:%S.%f")[:-3]


def replica_row(view: ReplicaView) -> dict[str, Any]:
    traffic = view.traffic
    p99 = traffic.p99_seconds
    return {
        **view.as_json(),
        "shown": {
            "health": view.health if view.reason is None else f"{view.health}: {view.reason}",
            "version": view.version or DASH,
            "uptime": seconds(view.uptime_seconds),
            "request_rate": rate(traffic.request_rate),
            "error_rate": share(traffic.error_rate),
            "p99": milliseconds(None if p99 is None else p99 * 1000),
        },
    }


def services(overview: Overview) -> dict[str, Any]:
    return {
        "taken_at": overview.taken_at,
        "services": [replica_row(view) for view in overview.replicas],
    }


def service_health(overview: Overview) -> dict[str, str]:
    """A service is up when any replica is, down when none answers, degraded otherwise."""
    states: dict[str, set[str]] = {}
    for view in overview.replicas:
        states.setdefault(view.service, set()).add(view.health)
    return {
        name: "up" if "up" in seen else "down" if seen == {"down"} else "degraded"
        for name, seen in states.items()
    }


def service_map(drawn: ServiceMap, health: Mapping[str, str]) -> dict[str, Any]:
    body = drawn.as_json()
    for node in body["nodes"]:
        node["health"] = health.get(node["name"], "unknown")
    return body


def trace_row(summary: TraceSummary) -> dict[str, Any]:
    return {
        **summary.as_json(),
        "shown": {
            "start": clock(summary.start),
            "duration": milliseconds(summary.duration_ms),
            "services": ", ".join(summary.services),
        },
    }


def traces(summaries: Iterable[TraceSummary], answers: Sequence[Answer]) -> dict[str, Any]:
    return {"traces": [trace_row(s) for s in summaries], "unreachable": unreachable(answers)}


def waterfall(drawn: Waterfall, colours: Mapping[str, str]) -> dict[str, Any]:
    return {
        "trace_id": drawn.trace_id,
        "start": drawn.start,
        "duration_ms": drawn.duration_ms,
        "shown": {"start": clock(drawn.start), "duration": milliseconds(drawn.duration_ms)},
        "services": [{"name": s, "colour": colours.get(s, "#888")} for s in drawn.services],
        "spans": [
            {
                "span_id": bar.span.span_id,
                "parent_id": bar.span.parent_id,
                "name": bar.span.name,
                "kind": bar.span.kind,
                "service": bar.span.service,
                "replica": bar.span.replica,
                "status": bar.span.status,
                "depth": bar.depth,
                "offset": bar.offset,
                "width": bar.width,
                "colour": colours.get(bar.span.service, "#888"),
                "duration": milliseconds(bar.span.duration_ms),
                "at": milliseconds((bar.span.start - drawn.start) * 1000),
                "attributes": {k: _plain(v) for k, v in sorted(bar.span.attributes.items())},
            }
            for bar in drawn.bars
        ],
    }


def log_row(line: Mapping[str, Any]) -> dict[str, Any]:
    details = " ".join(
        f"{key}={_plain(value)}" for key, value in line.items() if key not in _LOG_COLUMNS
    )
    if len(details) > _DETAIL_LENGTH:
        details = details[: _DETAIL_LENGTH - 1] + "…"
    return {
        "timestamp": str(line.get("timestamp", "")),
        "level": str(line.get("level", "")),
        "event": str(line.get("event", "")),
        "service": str(line.get("service", "")),
        "replica": str(line.get("replica", "")),
        "details": details,
    }


def outboxes(answers: Sequence[Answer]) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for answer in answers:
        body = answer.body if isinstance(answer.body, Mapping) else {}
        has_outbox = bool(body.get("outbox")) if answer.error is None else None
        pending = body.get("pending") if has_outbox else None
        oldest = body.get("oldest_pending_seconds") if has_outbox else None
        if answer.error is not None:
            state = f"not read: {answer.error}"
        elif not has_outbox:
            state = "no outbox"
        else:
            state = f"{pending} pending" if pending else "empty"
        rows.append(
            {
                "service": answer.replica.service,
                "replica": answer.replica.replica,
                "outbox": has_outbox,
                "pending": pending if isinstance(pending, int) else None,
                "oldest_pending_seconds": oldest if isinstance(oldest, int | float) else None,
                "error": answer.error,
                "shown": {
                    "state": state,
                    "oldest": seconds(oldest) if isinstance(oldest, int | float) else DASH,
                },
            }
        )
    return {"outboxes": rows}


def event_row(event: SeenEvent) -> dict[str, Any]:
    return {**event.as_json(), "shown": {"received": clock(event.received_at)}}


def events(seen: Iterable[SeenEvent], *, subscribed: bool, broker: str) -> dict[str, Any]:
    return {
        "subscribed": subscribed,
        "broker": broker,
        "events": [event_row(event) for event in seen],
    }


def unreachable(answers: Sequence[Answer]) -> list[dict[str, Any]]:
    """The replicas that did not answer, and why, so a page says what it could not read."""
    found = {
        (a.replica.service, a.replica.replica): a.error for a in answers if a.error is not None
    }
    return [
        {"service": service, "replica": replica, "error": error}
        for (service, replica), error in found.items()
    ]


def _plain(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 200 else text[:199] + "…"
