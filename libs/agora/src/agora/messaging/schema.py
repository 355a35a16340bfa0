"""The outbox and inbox tables every service with events has, in its own database.

A service's Alembic revision creates them with :func:`create_tables` (and, should it ever need to,
drops them with :func:`drop_tables`), so they live and migrate with the service's own schema.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()
PENDING_INDEX = "ix_agora_outbox_pending"


def _outbox_columns() -> list[Column[Any]]:
    # ``seq`` orders a service's events (per aggregate, the order they were recorded in). Rows are
    # claimed by ``status``, never by "seq above the last seen": a sequence is not commit order,
    # and a high-water mark skips rows whose transactions commit late.
    return [
        Column(
            "seq",
            BigInteger().with_variant(Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        Column("id", String(64), nullable=False, unique=True),
        Column("aggregate", String(200), nullable=False),
        Column("subject", String(255), nullable=False),
        Column("type", String(200), nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("traceparent", String(64), nullable=True),
        Column("status", String(10), nullable=False, server_default="pending"),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("sent_at", DateTime(timezone=True), nullable=True),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("last_error", Text, nullable=True),
    ]


def _inbox_columns() -> list[Column[Any]]:
    return [
        Column("consumer", String(200), primary_key=True),
        Column("event_id", String(64), primary_key=True),
        Column("handled_at", DateTime(timezone=True), nullable=False),
    ]


# One event to publish, written in the transaction of the change it reports.
outbox = Table(
    "agora_outbox",
    metadata,
    *_outbox_columns(),
    Index(PENDING_INDEX, "status", "aggregate", "seq"),
)

# This consumer has applied this event: written in the transaction of the effect.
inbox = Table("agora_inbox", metadata, *_inbox_columns())


def create_tables(op: Any) -> None:
    """Create the outbox and inbox from inside an Alembic revision's ``upgrade()``."""
    op.create_table(outbox.name, *_outbox_columns())
    op.create_index(PENDING_INDEX, outbox.name, ["status", "aggregate", "seq"])
    op.create_table(inbox.name, *_inbox_columns())


def drop_tables(op: Any) -> None:
    op.drop_table(inbox.name)
    op.drop_index(PENDING_INDEX, table_name=outbox.name)
    op.drop_table(outbox.name)
