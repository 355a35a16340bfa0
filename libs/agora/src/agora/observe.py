"""What each process shows the operations console about itself: its recent spans, its recent log
lines, its outbox backlog (and, at ``/metrics``, its Prometheus metrics).

    GET /internal/spans?trace_id=<32 hex>&limit=<1..2000>
        {"service", "replica", "spans": [span, ...]}         newest first
    GET /internal/logs?trace_id=<32 hex>&limit=<1..2000>
        {"service", "replica", "logs": [event, ...]}         newest first
    GET /internal/outbox
        {"service", "replica", "outbox": bool, "pending": int, "oldest_pending_seconds": float|null}

A span is ``{"trace_id", "span_id", "parent_id", "name", "kind", "service", "replica", "start",
"duration_ms", "status", "attributes"}`` (see :func:`agora.telemetry.span_record`); a log line is
the event as it was written. Both are the process's own, kept in memory (the last 2,000 spans
and 5,000 lines), and each endpoint answers with those of its own service: a process may hold
several services' apps.

These routes are not public (the gateway forwards only the topology's routes), are left out of
the OpenAPI document, and are neither traced nor logged per request: the console polls them. They
hold every shopper's requests, so each needs the operator's token (``Authorization: Bearer``,
see :class:`agora.auth.OperatorGuard`); anything else is a 401, whatever address it comes from.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from prometheus_client import Gauge
from sqlalchemy import Connection, func, select

from agora.auth import OperatorGuard
from agora.db import UnitOfWork, aware
from agora.logs import RecentLogs, recent_logs
from agora.messaging.relay import has_outbox
from agora.messaging.schema import outbox
from agora.settings import ServiceSettings
from agora.telemetry import RecentSpans, recent_spans

SERVICE_INFO = Gauge(
    "agora_service_info",
    "Always 1: which service, version and replica this process serves.",
    ["service", "version", "replica"],
)

TraceId = Annotated[
    str | None, Query(pattern="^[0-9a-fA-F]{32}$", description="Only this trace's (32 hex).")
]
Limit = Annotated[int, Query(ge=1, le=2000, description="At most this many, newest first.")]


def backlog_summary(connection: Connection) -> tuple[bool, int, datetime | None]:
    """Whether the service has an outbox; how many rows wait to be published; the oldest's
    time of recording."""
    if not has_outbox(connection):
        return False, 0, None
    pending, oldest = connection.execute(
        select(func.count(), func.min(outbox.c.created_at)).where(outbox.c.status == "pending")
    ).one()
    return True, int(pending), aware(oldest)


def internal_router(
    settings: ServiceSettings, uow: UnitOfWork | None, guard: OperatorGuard
) -> APIRouter:
    """The console's routes for one service's app, each behind the operator's ``guard``."""
    router = APIRouter(prefix="/internal", include_in_schema=False, dependencies=[Depends(guard)])
    identity: dict[str, Any] = {"service": settings.service_name, "replica": settings.replica}

    def newest(kind: str, kept: Callable[[], RecentSpans | RecentLogs]) -> None:
        """``GET /internal/<kind>``: the newest of what ``kept`` holds of this service."""

        async def listing(trace_id: TraceId = None, limit: Limit = 200) -> dict[str, Any]:
            found = kept().find(
                service=settings.service_name,
                trace_id=trace_id.lower() if trace_id else None,
                limit=limit,
            )
            return {**identity, kind: found}

        router.add_api_route(f"/{kind}", listing, methods=["GET"], name=kind)

    newest("spans", recent_spans)
    newest("logs", recent_logs)

    @router.get("/outbox")
    async def outbox_backlog() -> dict[str, Any]:
        has, pending, oldest = (
            await uow.query(backlog_summary) if uow is not None else (False, 0, None)
        )
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else None
        return {
            **identity,
            "outbox": has,
            "pending": pending,
            "oldest_pending_seconds": max(age, 0.0) if age is not None else None,
        }

    return router


__all__ = ["SERVICE_INFO", "backlog_summary", "internal_router", "recent_logs", "recent_spans"]
