"""The user's orders: the list, one order with its checkout's steps, and the order's status
events passed through as they come (``storefront.js`` redraws the steps from them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from agora.errors import Problem
from gateway.storefront.client import ORDERS, Services, segment
from gateway.storefront.common import (
    Listing,
    User,
    anyone,
    header_count,
    plain,
    together,
)
from gateway.storefront.forms import CANCEL_REASONS, GENERAL_CANCEL_REASON
from gateway.storefront.models import STEP_WORDS, STEPS, Order, Page
from gateway.web import PageNotFound, page_router, render

EVENT_STREAM = "text/event-stream"
_UNAVAILABLE = "orders is unavailable right now, try again in a moment"

_LIST = Listing(Page[Order], "orders", "/orders", ORDERS, "orders", refused=(400,))

router = page_router()


@router.get("/orders")
async def orders(request: Request, user: User, services: Services, cursor: str = "") -> Response:
    return await _LIST.page_at(request, services, cursor)


@router.get("/orders/{order_id}")
async def order(request: Request, order_id: str, user: User, services: Services) -> Response:
    found, _ = await together(
        services.get(
            Order,
            "orders",
            f"/orders/{segment(order_id)}",
            what=ORDERS,
            refused=(400, 403, 404, 422),
            refusal=PageNotFound("There is no such order in your account."),
        ),
        header_count(request, services),
    )
    return render(
        request,
        "storefront/order.html",
        {
            "order": found,
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
