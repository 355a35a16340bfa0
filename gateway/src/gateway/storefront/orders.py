"""The user's orders: the list, one order with its checkout's steps and its delivery, and the
order's live stream (``storefront.js`` redraws the page from it): orders' status events passed
through as they come, then, once the order is confirmed, its shipment's as shipping moves it.

Shipping publishes no stream of its own, so the gateway asks it for the order's shipment every
:data:`SHIPMENT_POLL` seconds and sends a ``shipment`` event when what the page shows changed
(ADR 44). A shipping that does not answer never fails the page: its delivery says so."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from agora.errors import Problem
from contracts.api import OrderStatus
from gateway.storefront.client import ORDERS, Services, ServicesClient, segment
from gateway.storefront.common import (
    Listing,
    User,
    anyone,
    header_count,
    plain,
    together,
)
from gateway.storefront.forms import CANCEL_REASONS, GENERAL_CANCEL_REASON
from gateway.storefront.models import STEP_WORDS, STEPS, Delivery, Order, Page
from gateway.web import PageError, PageNotFound, SessionExpired, page_router, render

EVENT_STREAM = "text/event-stream"
_UNAVAILABLE = "orders is unavailable right now, try again in a moment"
# How often the live stream asks shipping about a confirmed order's shipment (its carrier moves
# it every few seconds), how long the stream follows it before the browser asks again (as
# orders' own stream does), and how often a quiet stream says it is still there.
SHIPMENT_POLL = 1.0
FOLLOW_SECONDS = 300.0
KEEPALIVE = 15.0

_LIST = Listing(Page[Order], "orders", "/orders", ORDERS, "orders", refused=(400,))

router = page_router()


@router.get("/orders")
async def orders(request: Request, user: User, services: Services, cursor: str = "") -> Response:
    return await _LIST.page_at(request, services, cursor)


async def delivery(services: ServicesClient, order: Order) -> Delivery:
    """What the page shows of ``order``'s delivery; shipping is asked only once the order is
    confirmed, and its failure is the delivery's alone."""
    if order.status != OrderStatus.CONFIRMED:
        return Delivery.of(order.status, None)
    try:
        return Delivery.of(order.status, await services.shipment(order.id))
    except (PageError, SessionExpired):
        # Orders took the session; a refusal here is shipping's trouble, not the user's.
        return Delivery.unavailable()


async def _order_and_delivery(services: ServicesClient, order_id: str) -> tuple[Order, Delivery]:
    found = await services.get(
        Order,
        "orders",
        f"/orders/{segment(order_id)}",
        what=ORDERS,
        refused=(400, 403, 404, 422),
        refusal=PageNotFound("There is no such order in your account."),
    )
    return found, await delivery(services, found)


@router.get("/orders/{order_id}")
async def order(request: Request, order_id: str, user: User, services: Services) -> Response:
    (found, shipping), _ = await together(
        _order_and_delivery(services, order_id), header_count(request, services)
    )
    return render(
        request,
        "storefront/order.html",
        {
            "order": found,
            "delivery": shipping,
            "steps": STEPS,
            "step_words": STEP_WORDS,
            "reasons": CANCEL_REASONS,
            "general_reason": GENERAL_CANCEL_REASON,
            "live_url": f"/orders/{quote(order_id, safe='')}/live",
        },
    )


@router.get("/orders/{order_id}/live")
async def order_live(request: Request, order_id: str, services: Services) -> Response:
    """Orders' status events for this order, passed through as they come; then, for a
    confirmed order, its delivery's ``shipment`` events until the shipment is delivered."""
    if await anyone(request) is None:
        return plain(401, "log in to follow this order")
    stack = AsyncExitStack()
    try:
        upstream = await stack.enter_async_context(
            services.client.stream(
                "orders",
                "GET",
                f"/orders/{segment(order_id)}/events",
                headers=list(services.headers({"Accept": EVENT_STREAM}).items()),
            )
        )
    except Problem:
        await stack.aclose()
        return plain(503, _UNAVAILABLE)
    if upstream.status != 200:
        await stack.aclose()
        if upstream.status in (400, 403, 404):
            return plain(404, "no such order")
        if upstream.status == 401:
            return plain(401, "log in to follow this order")
        return plain(503, _UNAVAILABLE)

    async def events() -> AsyncIterator[bytes]:
        async with stack:
            async for chunk in upstream.content.iter_any():
                yield chunk
        # Orders' stream ends once the order is settled (or after a few minutes).
        async for event in _delivery_events(services, order_id):
            yield event

    return StreamingResponse(
        events(),
        media_type=EVENT_STREAM,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _delivery_events(services: ServicesClient, order_id: str) -> AsyncIterator[bytes]:
    """A confirmed order's delivery as ``shipment`` events: the first as it is, then one for each
    change, until nothing will change any more or the stream has run :data:`FOLLOW_SECONDS`
    (the browser then asks again, as the ``retry`` of orders' stream tells it)."""
    try:
        order = await services.get(Order, "orders", f"/orders/{segment(order_id)}", what=ORDERS)
    except (PageError, SessionExpired):
        return  # the browser asks again, and hears from orders itself
    if order.status != OrderStatus.CONFIRMED:
        return  # cancelled: nothing to ship; still pending: orders' next stream follows it
    started = last_sent = time.monotonic()
    shown: Delivery | None = None
    while True:
        current = await delivery(services, order)
        if current != shown:
            shown = current
            yield f"event: shipment\ndata: {current.model_dump_json()}\n\n".encode()
            last_sent = time.monotonic()
            if current.final:
                return
        now = time.monotonic()
        if now - started >= FOLLOW_SECONDS:
            return
        if now - last_sent >= KEEPALIVE:
            yield b": keep-alive\n\n"
            last_sent = now
        await asyncio.sleep(SHIPMENT_POLL)
