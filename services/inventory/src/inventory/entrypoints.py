"""Inventory's entry points: HTTP routes, the subscriptions to events and commands, and the timer
that expires reservations. Each parses what came in, runs one handler, and answers.

| route | who | answer |
|---|---|---|
| GET /inventory/stock/{sku} | anyone | 200 ``{sku, available}`` |
| POST /inventory/stock/{sku}/adjustments ``{delta, reason}`` | admin | 200 ``{sku, available}`` |
| GET /inventory/stock?limit=&cursor= | admin | 200 ``{items, next_cursor}`` |
| GET /inventory/reservations?status=&order_id=&limit=&cursor= | admin | 200 ``{items, ...}`` |
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Header, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator
from sqlalchemy import Connection

from agora.app import Hook, Resources
from agora.cursor import REFUSED_CURSOR, PageOut, page_size
from agora.deps import Admin, Uow, provided
from agora.fields import WholeNumber
from agora.messaging import CloudEvent, Subscription
from agora.query import QueryParams, page_cursor, page_limit
from contracts.catalog import ProductCreated
from contracts.inventory import CommitStock, ReleaseStock, ReserveStock
from inventory import application
from inventory.application import RESERVATION_LISTING, STOCK_LISTING, ReservationFilter
from inventory.domain import (
    DELTA_MAX,
    IDEMPOTENCY_KEY_MAX,
    ORDER_ID_MAX,
    PAGE_DEFAULT,
    PAGE_MAX,
    REASON_MAX,
    SKU_PATTERN,
    Line,
    Status,
    Stock,
)

JSON = "application/json"

log = structlog.get_logger("inventory")

router = APIRouter(tags=["inventory"])


Parts = Annotated[application.Parts, Depends(provided(application.Parts))]
Sku = Annotated[str, Path(pattern=SKU_PATTERN, description="Upper-case letters, digits and '-'.")]


class Availability(BaseModel):
    """What anyone may know of a SKU's stock."""

    sku: str
    available: int = Field(description="Units that can be ordered now.")


class StockOut(BaseModel):
    """A SKU's whole stock row, for admins and the consistency checker."""

    sku: str
    on_hand: int = Field(description="Units in the warehouse, reserved ones included.")
    reserved: int = Field(description="Units held by orders not yet committed.")
    available: int = Field(description="on_hand - reserved.")
    seeded: int = Field(description="The opening quantity (0 for a SKU that had none).")
    adjusted: int = Field(description="The sum of all admin adjustments.")

    @classmethod
    def of(cls, row: Stock) -> StockOut:
        return cls(
            sku=row.sku,
            on_hand=row.on_hand,
            reserved=row.reserved,
            available=row.available,
            seeded=row.seeded or 0,
            adjusted=row.adjusted,
        )


class StockPage(PageOut[StockOut]):
    pass


class LineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sku: str
    quantity: int


class ReservationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    order_id: str
    status: Status
    lines: list[LineOut] = Field(description="Empty for a release that came before any reserve.")
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ReservationPage(PageOut[ReservationOut]):
    pass


class NewAdjustment(BaseModel):
    """A correction of the units on hand: a count, a delivery, a breakage."""

    model_config = ConfigDict(extra="forbid", strict=True)

    delta: WholeNumber = Field(
        ge=-DELTA_MAX,
        le=DELTA_MAX,
        description="Units to add (positive) or remove (negative); never 0.",
        json_schema_extra={"not": {"const": 0}},
    )
    reason: str = Field(min_length=1, max_length=REASON_MAX, examples=["stock count"])

    @field_validator("delta")
    @classmethod
    def _not_zero(cls, delta: int) -> int:
        if delta == 0:
            raise ValueError("a delta of zero changes nothing")
        return delta

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, reason: str) -> str:
        if not reason.strip():
            raise ValueError("say why the stock changes")
        return reason.strip()


class _Paging(QueryParams):
    """An empty value (``?cursor=``) means the parameter is not given."""

    limit: int = page_limit(PAGE_DEFAULT, PAGE_MAX)
    cursor: str | None = page_cursor()


class StockQuery(_Paging):
    pass


class ReservationQuery(_Paging):
    status: Status | None = None
    order_id: str | None = Field(default=None, max_length=ORDER_ID_MAX)


_AVAILABILITY = TypeAdapter(Availability)
_STOCK_PAGE = TypeAdapter(StockPage)
_RESERVATION_PAGE = TypeAdapter(ReservationPage)


def _json(body: bytes) -> Response:
    return Response(body, media_type=JSON)


def _availability(sku: str, available: int) -> Response:
    return _json(_AVAILABILITY.dump_json(Availability(sku=sku, available=available)))


@router.get("/inventory/stock/{sku}", response_model=Availability)
async def get_stock(sku: Sku, uow: Uow, parts: Parts) -> Response:
    """How many units of a SKU can be ordered now."""
    row = await uow.query(application.get_stock, parts.stockrooms, sku)
    return _availability(row.sku, row.available)


@router.post("/inventory/stock/{sku}/adjustments", response_model=Availability)
async def adjust_stock(
    sku: Sku,
    body: NewAdjustment,
    uow: Uow,
    parts: Parts,
    _admin: Admin,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=IDEMPOTENCY_KEY_MAX,
            description="The same key again gets the first answer; nothing is applied twice.",
        ),
    ] = None,
) -> Response:
    """Correct the units on hand (admin only). Never below what orders hold: that is a 409."""
    adjustment = await uow.run(
        application.adjust_stock, parts.stockrooms, sku, body.delta, body.reason, idempotency_key
    )
    return _availability(adjustment.sku, adjustment.available)


@router.get("/inventory/stock", response_model=StockPage, responses=REFUSED_CURSOR)
async def list_stock(
    query: Annotated[StockQuery, Query()], uow: Uow, parts: Parts, _admin: Admin
) -> Response:
    """Every SKU's stock row, by sku, one page at a time (admin only)."""
    after = application.read_cursor(query.cursor, STOCK_LISTING) if query.cursor else None
    page = await uow.query(
        application.list_stock, parts.stockrooms, after, page_size(query.limit, PAGE_MAX)
    )
    return _json(_STOCK_PAGE.dump_json(StockPage.of(page, StockOut.of)))


@router.get("/inventory/reservations", response_model=ReservationPage, responses=REFUSED_CURSOR)
async def list_reservations(
    query: Annotated[ReservationQuery, Query()], uow: Uow, parts: Parts, _admin: Admin
) -> Response:
    """Reservations by order id, optionally of one status or one order (admin only)."""
    after = application.read_cursor(query.cursor, RESERVATION_LISTING) if query.cursor else None
    where = ReservationFilter(status=query.status, order_id=query.order_id)
    page = await uow.query(
        application.list_reservations,
        parts.stockrooms,
        where,
        after,
        page_size(query.limit, PAGE_MAX),
    )
    return _json(
        _RESERVATION_PAGE.dump_json(ReservationPage.of(page, ReservationOut.model_validate))
    )


def subscriptions(parts: application.Parts) -> tuple[Subscription, ...]:
    """What inventory listens to: catalog's new products, and the checkout's commands, handled
    with the parts bootstrap chose, as the routes are."""
    stockrooms = parts.stockrooms

    def open_stock(connection: Connection, event: ProductCreated, envelope: CloudEvent) -> None:
        application.open_stock(connection, stockrooms, event.sku)

    def reserve_stock(connection: Connection, command: ReserveStock, envelope: CloudEvent) -> None:
        lines = [Line(line.sku, line.quantity) for line in command.lines]
        application.reserve_stock(
            connection, stockrooms, command.order_id, lines, ttl=parts.reservation_ttl
        )

    def release_stock(connection: Connection, command: ReleaseStock, envelope: CloudEvent) -> None:
        application.release_stock(connection, stockrooms, command.order_id)

    def commit_stock(connection: Connection, command: CommitStock, envelope: CloudEvent) -> None:
        application.commit_stock(connection, stockrooms, command.order_id)

    return (
        Subscription(ProductCreated, open_stock),
        Subscription(ReserveStock, reserve_stock),
        Subscription(ReleaseStock, release_stock),
        Subscription(CommitStock, commit_stock),
    )


def expiry(parts: application.Parts, *, interval: float, batch: int) -> Hook:
    """The timer that gives back the units of reservations not committed in time.

    Every replica runs it; two at once expire different reservations (see ``Stockrooms.due``).
    """

    async def expire_reservations(resources: Resources) -> None:
        assert resources.uow is not None
        while True:
            expired = await resources.uow.run(
                application.expire_reservations,
                parts.stockrooms,
                now=datetime.now(UTC),
                limit=batch,
            )
            if expired:
                log.info("reservations expired", count=expired)
            # A full batch means more may be due: take them at once.
            if expired < batch:
                await asyncio.sleep(interval)

    return expire_reservations
