"""Recording events in the transaction of the change they report.

A handler calls :func:`record` with the event and the id of the aggregate it is about; nothing is
written yet. When the handler returns, the unit of work writes every recorded event into
``agora_outbox`` in the same transaction (:func:`write_recorded`, asked for through
:func:`agora.transactions.before_commit`), so the change and its events are committed together or
not at all. The relay publishes them afterwards.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from opentelemetry import propagate
from sqlalchemy import Connection, insert

from agora.messaging.envelope import CloudEvent, EventModel, envelope, subject_of
from agora.messaging.schema import outbox
from agora.transactions import before_commit, source_of

RECORDED = "agora.recorded_events"


def record(connection: Connection, event: EventModel, *, aggregate: str) -> CloudEvent:
    """Publish ``event`` about ``aggregate`` once this transaction commits; returns its envelope.

    A command (see :func:`~agora.messaging.envelope.subject_of`) is sent the same way: it is in
    the outbox with the change that decided it, and goes to its receiver's subject.

    The trace context of the moment is kept with it, so the consumer's span becomes a child of
    the span that recorded the event, however late the relay publishes it.
    """
    cloud_event = envelope(event, source=source_of(connection), subject=aggregate)
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    connection.info.setdefault(RECORDED, []).append(
        (cloud_event, subject_of(event), carrier.get("traceparent"))
    )
    before_commit(connection, write_recorded)
    return cloud_event


# Built once (ADR 57): every transaction that records an event runs it.
_INSERT = insert(outbox)


def write_recorded(connection: Connection) -> int:
    """Write the events recorded in this connection into the outbox; how many there were."""
    recorded: list[tuple[CloudEvent, str, str | None]] = connection.info.pop(RECORDED, [])
    if not recorded:
        return 0
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = [
        {
            "id": cloud_event.id,
            "aggregate": cloud_event.subject or "",
            "subject": subject,
            "type": cloud_event.type,
            "payload": cloud_event.to_bytes(),
            "traceparent": traceparent,
            "status": "pending",
            "created_at": now,
            "attempts": 0,
        }
        for cloud_event, subject, traceparent in recorded
    ]
    connection.execute(_INSERT, rows)
    return len(rows)
