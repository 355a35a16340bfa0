"""Orders' HTTP routes: parse, run one use case, answer."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse

from agora.auth import Principal
from agora.cursor import REFUSED_CURSOR
from agora.deps import CurrentUser, Uow, provided
from agora.tasks import Bell
from orders import application
from orders.application import Follow, Listing, PlaceOrder, Viewer
from orders.domain import Address, InvalidCard, Order, Requested, Status, Step
from orders.entrypoints.schemas import (
    IDEMPOTENCY_KEY_PARAMETER,
    ORDER,
    PAGE,
    Key,
    ListQuery,
    NewOrder,
    OrderOut,
    OrderPage,
    out,
)

JSON = "application/json"
REPLAYED = "Idempotent-Replayed"

router = APIRouter(tags=["orders"])

Parts = Annotated[application.Parts, Depends(provided(application.Parts))]


def _order(order: Order, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        ORDER.dump_json(out(order)), status_code=status, media_type=JSON, headers=headers
    )


def _viewer(user: Principal) -> Viewer:
    return Viewer(user_id=user.id, admin=user.is_admin)


@router.post(
    "/orders",
    status_code=202,
    response_model=OrderOut,
    responses={
        200: {"model": OrderOut, "description": "The order this Idempotency-Key placed."},
        503: {
            "description": "Too many checkouts are under way (Retry-After says when to try "
            "again), or a service the placement needs cannot answer; nothing was placed."
        },
    },
    openapi_extra={"parameters": [IDEMPOTENCY_KEY_PARAMETER]},
)
async def place_order(
    user: CurrentUser, key: Key, body: NewOrder, uow: Uow, parts: Parts
) -> Response:
    """Place an order; its checkout runs after the answer (202, PENDING).

    The same Idempotency-Key again (the same user, the same body) answers 200 with the order it
    placed and `Idempotent-Replayed: true`; with another body, 422. While as many checkouts
    are under way as the service takes at once, a new order is refused, 503 with Retry-After.
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


@router.get("/orders", response_model=OrderPage, responses=REFUSED_CURSOR)
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
    return Response(PAGE.dump_json(OrderPage.of(page, out)), media_type=JSON)


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
            data = ORDER.dump_json(out(order)).decode()
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
