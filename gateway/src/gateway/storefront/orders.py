"""The user's orders: the list, one order with its checkout's steps, and the order's status
events passed through as they come (``storefront.js`` redraws the steps from them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from agora.errors import Problem
from gateway.storefront.client import ORDERS, Services, read, segment
from gateway.storefront.common import (
    User,
    anyone,
    cursor_params,
    header_count,
    listing,
    paged,
    plain,
    together,
)
from gateway.storefront.forms import CANCEL_REASONS, GENERAL_CANCEL_REASON
from gateway.storefront.models import STEP_WORDS, STEPS, Order, Page
from gateway.web import PageNotFound, Unavailable, page_router, render

EVENT_STREAM = "text/event-stream"
_UNAVAILABLE = "orders is unavailable right now, try again in a moment"

router = page_router()


@router.get("/orders")
async def orders(request: Request, user: User, services: Services, cursor: str = "") -> Response:
    page, _ = await together(
        listing(
            services,
            Page[Order],
            "orders",
            "/orders",
            what=ORDERS,
            params=cursor_params(cursor),
            refused=(400,),
        ),
        header_count(request, services),
    )
    return render(
        request,
        "storefront/orders.html",
        {
            "orders": page.items,
            "paged": bool(cursor),
            "next_page": paged("/orders", {}, page.next_cursor),
        },
    )


@router.get("/orders/{order_id}")
async def order(request: Request, order_id: str, user: User, services: Services) -> Response:
    reply, _ = await together(
        services.call("orders", "GET", f"/orders/{segment(order_id)}", what=ORDERS),
        header_count(request, services),
    )
    if reply.status in (400, 403, 404, 422):
        raise PageNotFound("There is no such order in your account.")
    if reply.status != 200:
        raise Unavailable(ORDERS)
    return render(
        request,
        "storefront/order.html",
        {
            "order": read(Order, reply, ORDERS),
            "steps": STEPS,
            "step_words": STEP_WORDS,
            "reasons": CANCEL_REASONS,
            "general_reason": GENERAL_CANCEL_REASON,
            "live_url": f"/orders/{quote(order_id, safe='')}/live",
        },
    )


@router.get("/orders/{order_id}/live")
async def order_live(request: Request, order_id: str, services: Services) -> Response:
    """Orders' status events for this order, passed through as they come."""
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

    return StreamingResponse(
        events(),
        media_type=EVENT_STREAM,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
