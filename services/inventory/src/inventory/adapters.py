"""Storage of stock and reservations in SQL (SQLite or PostgreSQL), and the opening stock file
shipped with the service."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import datetime
from importlib import resources
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    Index,
    MetaData,
    Row,
    String,
    Table,
    bindparam,
    select,
)
from sqlalchemy.exc import IntegrityError

from agora.columns import key_text, serial_key, timestamp
from agora.db import aware
from agora.sql import insert_if_absent
from inventory.application import ReservationFilter, Seed
from inventory.domain import (
    Adjustment,
    IdempotencyKeyReused,
    Line,
    Reservation,
    Status,
    Stock,
)

metadata = MetaData()


stock = Table(
    "stock",
    metadata,
    Column("sku", key_text(32), primary_key=True),
    Column("on_hand", BigInteger, nullable=False),
    Column("reserved", BigInteger, nullable=False),
    # The opening quantity; NULL until the seed gave one (a SKU created later never gets one).
    Column("seeded", BigInteger, nullable=True),
    Column("adjusted", BigInteger, nullable=False),
    CheckConstraint("reserved >= 0", name="ck_stock_reserved_not_negative"),
    CheckConstraint("reserved <= on_hand", name="ck_stock_reserved_within_on_hand"),
)

reservations = Table(
    "reservations",
    metadata,
    Column("order_id", key_text(100), primary_key=True),
    Column("status", String(10), nullable=False),
    Column("lines", JSON, nullable=False),
    timestamp("expires_at", nullable=True),
    timestamp("created_at"),
    timestamp("updated_at"),
    Index("ix_reservations_status_expires_at", "status", "expires_at"),
    Index("ix_reservations_status_order_id", "status", "order_id"),
)

adjustments = Table(
    "adjustments",
    metadata,
    serial_key(),
    Column("sku", key_text(32), nullable=False),
    Column("delta", BigInteger, nullable=False),
    Column("reason", String(200), nullable=False),
    Column("idempotency_key", String(200), nullable=True, unique=True),
    Column("available", BigInteger, nullable=False),
    timestamp("created_at"),
)

STOCK_COLUMNS = (
    stock.c.sku,
    stock.c.on_hand,
    stock.c.reserved,
    stock.c.seeded,
    stock.c.adjusted,
)
RESERVATION_COLUMNS = (
    reservations.c.order_id,
    reservations.c.status,
    reservations.c.lines,
    reservations.c.expires_at,
    reservations.c.created_at,
    reservations.c.updated_at,
)


def _stock(row: Row[*tuple[Any, ...]]) -> Stock:
    return Stock(**row._asdict())


def _reservation(row: Row[*tuple[Any, ...]]) -> Reservation:
    created_at = aware(row.created_at)
    updated_at = aware(row.updated_at)
    assert created_at is not None
    assert updated_at is not None
    return Reservation(
        order_id=row.order_id,
        status=Status(row.status),
        lines=tuple(Line(str(line["sku"]), int(line["quantity"])) for line in row.lines),
        expires_at=aware(row.expires_at),
        created_at=created_at,
        updated_at=updated_at,
    )


def _reservation_values(reservation: Reservation) -> dict[str, Any]:
    return {
        "status": reservation.status.value,
        "lines": [{"sku": line.sku, "quantity": line.quantity} for line in reservation.lines],
        "expires_at": reservation.expires_at,
        "created_at": reservation.created_at,
        "updated_at": reservation.updated_at,
    }


# Built once, their values passed at each execution (ADR 57): every checkout reads and writes its
# stock rows and its reservation several times.
_STOCK = (
    select(*STOCK_COLUMNS)
    .where(stock.c.sku.in_(bindparam("skus", expanding=True)))
    .order_by(stock.c.sku)
)
# PostgreSQL locks the rows in the sort order: every transaction takes them by sku, so none waits
# for a row another holds while holding one that other wants. SQLite ignores it: its write
# transactions run one at a time (BEGIN IMMEDIATE).
_STOCK_FOR_UPDATE = _STOCK.with_for_update()
# The SET clause of an update is the columns of its parameters; the key is a parameter of its own.
_UPDATE_STOCK = stock.update().where(stock.c.sku == bindparam("stock_sku"))
_RESERVATION = select(*RESERVATION_COLUMNS).where(reservations.c.order_id == bindparam("order_id"))
_RESERVATION_FOR_UPDATE = _RESERVATION.with_for_update()
_INSERT_RESERVATION = reservations.insert()
_UPDATE_RESERVATION = reservations.update().where(
    reservations.c.order_id == bindparam("reservation_id")
)


class SqlStockrooms:
    """The :class:`inventory.application.Stockrooms` port in the service's database."""

    def stock(
        self, connection: Connection, skus: Sequence[str], *, for_update: bool = False
    ) -> list[Stock]:
        if not skus:
            return []
        statement = _STOCK_FOR_UPDATE if for_update else _STOCK
        return [_stock(row) for row in connection.execute(statement, {"skus": list(skus)})]

    def open(self, connection: Connection, skus: Iterable[str]) -> None:
        rows = [
            {"sku": sku, "on_hand": 0, "reserved": 0, "seeded": None, "adjusted": 0} for sku in skus
        ]
        if rows:
            connection.execute(insert_if_absent(connection, stock).values(rows))

    def save(self, connection: Connection, rows: Iterable[Stock]) -> None:
        changes = [
            {
                "stock_sku": row.sku,
                "on_hand": row.on_hand,
                "reserved": row.reserved,
                "seeded": row.seeded,
                "adjusted": row.adjusted,
            }
            for row in rows
        ]
        if changes:
            connection.execute(_UPDATE_STOCK, changes)

    def reservation(
        self, connection: Connection, order_id: str, *, for_update: bool = False
    ) -> Reservation | None:
        statement = _RESERVATION_FOR_UPDATE if for_update else _RESERVATION
        row = connection.execute(statement, {"order_id": order_id}).first()
        return None if row is None else _reservation(row)

    def add_reservation(self, connection: Connection, reservation: Reservation) -> None:
        connection.execute(
            _INSERT_RESERVATION,
            {"order_id": reservation.order_id, **_reservation_values(reservation)},
        )

    def save_reservation(self, connection: Connection, reservation: Reservation) -> None:
        connection.execute(
            _UPDATE_RESERVATION,
            {"reservation_id": reservation.order_id, **_reservation_values(reservation)},
        )

    def due(self, connection: Connection, now: datetime, limit: int) -> list[Reservation]:
        statement = (
            select(*RESERVATION_COLUMNS)
            .where(
                reservations.c.status == Status.ACTIVE.value,
                reservations.c.expires_at < now,
            )
            .order_by(reservations.c.expires_at, reservations.c.order_id)
            .limit(limit)
            # Two replicas expiring at once take different reservations; one that a commit
            # holds right now is left for the next round, by when it is no longer active.
            .with_for_update(skip_locked=True)
        )
        return [_reservation(row) for row in connection.execute(statement)]

    def stock_page(self, connection: Connection, after: str | None, limit: int) -> list[Stock]:
        statement = select(*STOCK_COLUMNS)
        if after is not None:
            statement = statement.where(stock.c.sku > after)
        statement = statement.order_by(stock.c.sku).limit(limit)
        return [_stock(row) for row in connection.execute(statement)]

    def reservation_page(
        self, connection: Connection, where: ReservationFilter, after: str | None, limit: int
    ) -> list[Reservation]:
        statement = select(*RESERVATION_COLUMNS)
        if where.status is not None:
            statement = statement.where(reservations.c.status == where.status.value)
        if where.order_id is not None:
            statement = statement.where(reservations.c.order_id == where.order_id)
        if after is not None:
            statement = statement.where(reservations.c.order_id > after)
        statement = statement.order_by(reservations.c.order_id).limit(limit)
        return [_reservation(row) for row in connection.execute(statement)]

    def adjustment(self, connection: Connection, key: str) -> Adjustment | None:
        row = connection.execute(
            select(
                adjustments.c.sku,
                adjustments.c.delta,
                adjustments.c.reason,
                adjustments.c.idempotency_key.label("key"),
                adjustments.c.available,
                adjustments.c.created_at,
            ).where(adjustments.c.idempotency_key == key)
        ).first()
        if row is None:
            return None
        fields = row._asdict()
        fields["created_at"] = aware(fields["created_at"])
        return Adjustment(**fields)

    def add_adjustment(self, connection: Connection, adjustment: Adjustment) -> None:
        # Its fields are the table's columns, as ``adjustment`` reads them back.
        values = asdict(adjustment)
        values["idempotency_key"] = values.pop("key")
        try:
            connection.execute(adjustments.insert().values(**values))
        except IntegrityError as error:
            # The same key sent at the same moment for another SKU: the second insert loses.
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used for another adjustment; use a new key"
            ) from error


def load_seed(name: str = "seed.json") -> Seed:
    """The opening stock shipped inside the package (``inventory/seed.json``)."""
    document = json.loads(resources.files("inventory").joinpath(name).read_text("utf-8"))
    return Seed(
        name=document["name"],
        quantities={entry["sku"]: int(entry["quantity"]) for entry in document["stock"]},
    )
