"""Orders' HTTP routes and message subscriptions: parse, run one use case, answer.

The card number is read here, checked, handed to payments for a token and dropped: it is in no
answer, no log line and no row. Validation answers name the field, never its value.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator
from sqlalchemy.orm import Session

from agora.auth import Principal
from agora.deps import CurrentUser, Uow, provided
from agora.errors import Problem, slug
from agora.fields import WholeNumber
from agora.messaging import CloudEvent, Subscription
from agora.query import QueryParams
from agora.tasks import Bell
from contracts.base import IntegrationEvent
from orders import application
from orders.application import ANSWERS, Clock, Follow, Listing, Orders, PlaceOrder, Viewer, utc_now
from orders.domain import (
    COUNTRY_PATTERN,
    IDEMPOTENCY_KEY_MAX,
    LINES_MAX,
    PAGE_DEFAULT,
    PAGE_MAX,
    QUANTITY_MAX,
    SKU_PATTERN,
    Address,
    InvalidCard,
    Order,
    Reason,
    Requested,
    Rules,
    Status,
    Step,
    card_digits,
)

JSON = "application/json"
REPLAYED = "Idempotent-Replayed"

router = APIRouter(tags=["orders"])


class IdempotencyKeyRequired(Problem):
    status = 400
    title = "Idempotency-Key required"


class InvalidIdempotencyKey(Problem):
    status = 400
    title = "Invalid Idempotency-Key"


async def idempotency_key(
    # Documented by the route (required); read here as optional so a missing one is our 400.
    key: Annotated[str | None, Header(alias="Idempotency-Key", include_in_schema=False)] = None,
) -> str:
    if key is None or not key.strip():
        raise IdempotencyKeyRequired(
            "placing an order needs an Idempotency-Key header: a new unique value per order"
        )
    if len(key) > IDEMPOTENCY_KEY_MAX or not key.isprintable():
        raise InvalidIdempotencyKey(
            f"the Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} printable characters"
        )
    return key


# The printable characters a header's value can carry (ISO 8859-1 but the controls, the no-break
# space and the soft hyphen), not starting or ending with a space: what ``idempotency_key`` takes.
_PRINTABLE = "!-~\u00a1-\u00ac\u00ae-\u00ff"
IDEMPOTENCY_KEY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": "A new unique value per order (1 to 200 printable characters): the same "
    "key again, with the same body, returns the same order.",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": IDEMPOTENCY_KEY_MAX,
        "pattern": f"^[{_PRINTABLE}](?:[ {_PRINTABLE}]*[{_PRINTABLE}])?$",
    },
}

Parts = Annotated[application.Parts, Depends(provided(application.Parts))]
Key = Annotated[str, Depends(idempotency_key)]


def _plain(value: str | None) -> str | None:
    if value is not None and any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("control characters are not allowed")
    return value


# 12 to 19 digits, and spaces anywhere (``card_digits`` takes them out).
CARD_NUMBER_PATTERN = r"^ *(?:[0-9] *){12,19}$"


class LineIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    sku: str = Field(pattern=SKU_PATTERN)
    quantity: WholeNumber = Field(ge=1, le=QUANTITY_MAX)


class AddressIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100)
    line1: str = Field(min_length=1, max_length=200)
    line2: str | None = Field(default=None, max_length=200)
    city: str = Field(min_length=1, max_length=100)
    postal_code: str = Field(min_length=1, max_length=20)
    country: str = Field(pattern=COUNTRY_PATTERN, description="ISO 3166-1 alpha-2, upper case.")

    @field_validator("name", "line1", "line2", "city", "postal_code")
    @classmethod
    def _no_control_characters(cls, value: str | None) -> str | None:
        return _plain(value)

    @field_validator("line2")
    @classmethod
    def _empty_is_absent(cls, value: str | None) -> str | None:
        return value or None


class NewOrder(BaseModel):
    """An order as a customer places it. Prices come from the catalogue, not from here."""

    model_config = ConfigDict(extra="forbid", strict=True)

    lines: list[LineIn] | None = Field(
        default=None,
        min_length=1,
        max_length=LINES_MAX,
        description="Leave out to order what the cart holds (an empty cart is 422).",
    )
    shipping_address: AddressIn
    card_number: str = Field(
        max_length=64,
        description="12 to 19 digits passing the Luhn check, spaces allowed; it is never stored.",
        json_schema_extra={"pattern": CARD_NUMBER_PATTERN},
    )

    @field_validator("card_number")
    @classmethod
    def _card(cls, value: str) -> str:
        try:
            card_digits(value)
        except InvalidCard as error:
            raise ValueError(str(error)) from None
        return value

    @model_validator(mode="after")
    def _one_line_per_sku(self) -> NewOrder:
        skus = [line.sku for line in self.lines or ()]
        if len(set(skus)) != len(skus):
            raise ValueError("each sku may appear on one line only")
        return self


class LineOut(BaseModel):
    sku: str
    name: str
    quantity: int
    unit_price: int = Field(description="Minor units of the order's currency.")
    line_total: int


class AddressOut(BaseModel):
    name: str
    line1: str
    line2: str | None
    city: str
    postal_code: str
    country: str


class CheckoutOut(BaseModel):
    step: Step
    attempts: int = Field(description="Sends of the current step's command(s) so far.")


class OrderOut(BaseModel):
    id: str
    user_id: str
    status: Status
    reason: Reason | None = Field(description="Why it was cancelled; null unless CANCELLED.")
    lines: list[LineOut]
    total: int = Field(description="Minor units of `currency`.")
    currency: str
    shipping_address: AddressOut
    card_brand: str
    card_last4: str
    placed_at: datetime
    updated_at: datetime
    deadline_at: datetime = Field(description="By then the order should be CONFIRMED or CANCELLED.")
    trace_id: str | None = Field(description="The checkout's trace.")
    checkout: CheckoutOut


class OrderPage(BaseModel):
    items: list[OrderOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


class ListQuery(QueryParams):
    status: Status | None = None
    limit: int = Field(default=PAGE_DEFAULT, ge=1, le=PAGE_MAX)
    cursor: str | None = Field(
        default=None,
        max_length=512,
        description="The `next_cursor` of the previous page, as it was handed out; any other "
        "value is refused (400).",
    )


_ORDER = TypeAdapter(OrderOut)
_PAGE = TypeAdapter(OrderPage)


def _out(order: Order) -> OrderOut:
    return OrderOut(
        id=order.id,
        user_id=order.user_id,
        status=order.status,
        reason=order.reason,
        lines=[
            LineOut(
                sku=line.sku,
                name=line.name,
                quantity=line.quantity,
                unit_price=line.unit_price,
                line_total=line.line_total,
            )
            for line in order.lines
        ],
        total=order.total,
        currency=order.currency,
        shipping_address=AddressOut(
            name=order.shipping_address.name,
            line1=order.shipping_address.line1,
            line2=order.shipping_address.line2,
            city=order.shipping_address.city,
            postal_code=order.shipping_address.postal_code,
            country=order.shipping_address.country,
        ),
        card_brand=order.card.brand,
        card_last4=order.card.last4,
        placed_at=order.placed_at,
        updated_at=order.updated_at,
        deadline_at=order.deadline_at,
        trace_id=order.trace_id,
        checkout=CheckoutOut(step=order.checkout.step, attempts=order.checkout.attempt),
    )


def _order(order: Order, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        _ORDER.dump_json(_out(order)), status_code=status, media_type=JSON, headers=headers
    )


def _viewer(user: Principal) -> Viewer:
    return Viewer(user_id=user.id, admin=user.is_admin)


@router.post(
    "/orders",
    status_code=202,
    response_model=OrderOut,
    responses={200: {"model": OrderOut, "description": "The order this Idempotency-Key placed."}},
    openapi_extra={"parameters": [IDEMPOTENCY_KEY_PARAMETER]},
)
async def place_order(
    user: CurrentUser, key: Key, body: NewOrder, uow: Uow, parts: Parts
) -> Response:
    """Place an order; its checkout runs after the answer (202, PENDING).

    The same Idempotency-Key again (the same user, the same body) answers 200 with the order it
    placed and `Idempotent-Replayed: true`; with another body, 422.
    """
    command = PlaceOrder(
        user_id=user.id,
        idempotency_key=key,
        lines=None
        if body.lines is None
        else tuple(Requested(line.sku, line.quantity) for line in body.lines),
        shipping_address=Address(**body.shipping_address.model_dump()),
        card_number=body.card_number,
    )
    try:
        placed = await application.place_order(uow, parts, command)
    except InvalidCard as error:
        # As a card number refused by the schema is answered: the field, never its value.
        raise RequestValidationError(
            [{"loc": ("body", "card_number"), "msg": str(error), "type": "value_error"}]
        ) from None
    if placed.replayed:
        return _order(placed.order, 200, {REPLAYED: "true"})
    return _order(placed.order, 202, {"Location": f"/orders/{placed.order.id}"})


@router.get(
    "/orders",
    response_model=OrderPage,
    responses={400: {"description": "A cursor this listing did not hand out."}},
)
async def list_orders(
    query: Annotated[ListQuery, Query()], user: CurrentUser, uow: Uow, parts: Parts
) -> Response:
    """Orders newest first: a customer's own, or every order for an admin."""
    listing = Listing(
        limit=query.limit,
        user_id=None if user.is_admin else user.id,
        status=query.status,
        after=application.CURSORS.decode(query.cursor) if query.cursor else None,
    )
    page = await uow.query(application.list_orders, parts.orders, listing)
    body = OrderPage(items=[_out(order) for order in page.items], next_cursor=page.next_cursor)
    return Response(_PAGE.dump_json(body), media_type=JSON)


@router.get("/orders/{order_id}", response_model=OrderOut)
async def get_order(order_id: str, user: CurrentUser, uow: Uow, parts: Parts) -> Response:
    """One order, for its owner or an admin; anyone else's is not found."""
    return _order(await uow.query(application.get_order, parts.orders, order_id, _viewer(user)))


EVENT_STREAM = "text/event-stream"
# One event of the stream, as an EventSource reads it (the schema of each event, as OpenAPI 3.1
# tools read a stream's schema): its data is the order in JSON.
STATUS_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"const": "status"},
        "id": {"type": "string", "description": "The event's number in this stream: 1, 2, ..."},
        "data": {
            "type": "string",
            "contentMediaType": JSON,
            "contentSchema": {"$ref": "#/components/schemas/OrderOut"},
        },
    },
}


@router.get(
    "/orders/{order_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-sent events: `status`, whose data is the order as "
            "`GET /orders/{id}` answers it. The first is the order as it is; one follows each "
            "change of its status or checkout step; the stream ends after CONFIRMED or "
            "CANCELLED (or after a few minutes, when the client reconnects). Lines starting "
            "with `:` only keep the connection alive.",
            "content": {EVENT_STREAM: {"schema": STATUS_EVENT}},
        }
    },
)
async def follow_order(
    order_id: str, user: CurrentUser, uow: Uow, parts: Parts
) -> StreamingResponse:
    """The order's status, live, for its owner or an admin; anyone else's is not found."""
    viewer = _viewer(user)
    # Looked up before the stream starts, so a stranger gets a 404 problem and no stream.
    order = await uow.query(application.get_order, parts.orders, order_id, viewer)

    async def current() -> Order:
        return await uow.query(application.get_order, parts.orders, order_id, viewer)

    return StreamingResponse(
        _status_events(order, current, parts.changes, parts.follow),
        media_type=EVENT_STREAM,
        # No cache keeps it and no proxy holds it back to fill a buffer.
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _status_events(
    order: Order, current: Callable[[], Awaitable[Order]], changes: Bell, follow: Follow
) -> AsyncIterator[bytes]:
    yield b"retry: 1000\n\n"  # how soon a client that lost the stream asks again, in ms
    started = last_sent = time.monotonic()
    shown: tuple[Status, Step] | None = None
    sent = 0
    while True:
        if (order.status, order.checkout.step) != shown:
            shown = (order.status, order.checkout.step)
            sent += 1
            data = _ORDER.dump_json(_out(order)).decode()
            yield f"id: {sent}\nevent: status\ndata: {data}\n\n".encode()
            last_sent = time.monotonic()
            if order.status is not Status.PENDING:
                return
        now = time.monotonic()
        if now - started >= follow.max_seconds:
            return
        if now - last_sent >= follow.keepalive:
            yield b": keep-alive\n\n"
            last_sent = now
        # Rung by a commit of this process; another replica's changes are found by the poll.
        await changes.wait(follow.poll)
        order = await current()


@router.post("/orders/{order_id}/cancel", response_model=OrderOut)
async def cancel_order(order_id: str, user: CurrentUser, uow: Uow, parts: Parts) -> Response:
    """Cancel an order not yet charged (409 once it is). It stays PENDING until what its
    checkout took is given back, then becomes CANCELLED with reason `customer_cancelled`."""
    order = await uow.run(
        application.cancel_order,
        parts.orders,
        parts.rules,
        order_id,
        _viewer(user),
        parts.clock(),
    )
    return _order(order)


def subscriptions(orders: Orders, rules: Rules, clock: Clock = utc_now) -> tuple[Subscription, ...]:
    """One subscription per answer from inventory and payments, each moving the checkout on.

    A function rather than a constant: the saga's timing comes from the settings. It takes the
    parts it uses rather than :class:`application.Parts`, which bootstrap completes only once the
    app exists (its clients of other services use the app's), after the app took these.
    """

    def checkout_answer(session: Session, event: IntegrationEvent, envelope: CloudEvent) -> None:
        application.answer(session, orders, rules, event, clock())

    return tuple(
        Subscription(answer, checkout_answer, name="on_" + slug(answer.__name__).replace("-", "_"))
        for answer in ANSWERS
    )
