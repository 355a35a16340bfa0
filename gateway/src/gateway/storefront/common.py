"""What the storefront's page groups share: who the user is, the settings, the header's cart
count, the user's cart as the cart and checkout pages show it, and a few small answers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Form, Request
from fastapi.responses import Response

from agora.auth import Principal
from agora.deps import provided
from gateway.settings import GatewaySettings
from gateway.storefront.client import ServicesClient
from gateway.storefront.models import Page
from gateway.web import (
    CART_COUNT_STATE,
    PageError,
    SessionExpired,
    check_csrf,
    current_user,
    render,
    require_user,
)


async def anyone(request: Request) -> Principal | None:
    """The user, or None, also when the session expired: for the pages that log a user in."""
    try:
        return await current_user(request)
    except SessionExpired:
        return None


User = Annotated[Principal, Depends(require_user)]
MaybeUser = Annotated[Principal | None, Depends(current_user)]
Anyone = Annotated[Principal | None, Depends(anyone)]
Settings = Annotated[GatewaySettings, Depends(provided(GatewaySettings))]
Text = Annotated[str, Form()]
CSRF = [Depends(check_csrf)]


async def together(*calls: Awaitable[Any]) -> list[Any]:
    """Run ``calls`` at once; the first failure is raised once all have ended (so none is left
    running unobserved)."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


async def header_count(request: Request, services: ServicesClient) -> None:
    """The header's count of the units in the cart, asked beside the page's own calls."""
    setattr(request.state, CART_COUNT_STATE, await services.cart_count())


async def cart_page(
    request: Request,
    services: ServicesClient,
    template: str,
    context: Mapping[str, Any],
    *,
    status: int = 200,
) -> Response:
    """A page about the user's cart (the cart, checkout): the cart and its lines, whether they
    can all be ordered, and ``context``; the header's count comes with it."""
    held = await services.cart()
    setattr(request.state, CART_COUNT_STATE, held.units)
    lines = held.items
    return render(
        request,
        template,
        {
            "cart": held,
            "lines": lines,
            "empty": not lines,
            "orderable": bool(lines) and all(line.orderable for line in lines),
            "unorderable": any(not line.orderable for line in lines),
            **context,
        },
        status=status,
    )


def bad_listing() -> PageError:
    return PageError(
        400, "Page not found", "This page of the list does not exist; start again from the first."
    )


def private() -> dict[str, str]:
    return {"Cache-Control": "no-store"}


def plain(status: int, text: str) -> Response:
    return Response(text + "\n", status_code=status, media_type="text/plain")


@dataclass(frozen=True, slots=True)
class Listing:
    """A list of the user's own at ``path`` here and at ``service``, 20 to a page, shown by the
    template ``storefront/<shown_as>.html`` as ``shown_as``; a status in ``refused`` (a cursor
    the service does not take) is the page of the list that does not exist."""

    page: type[Page[Any]]
    service: str
    path: str
    what: str
    shown_as: str
    refused: tuple[int, ...] = (400, 422)

    async def page_at(self, request: Request, services: ServicesClient, cursor: str) -> Response:
        found, _ = await together(
            services.get(
                self.page,
                self.service,
                self.path,
                what=self.what,
                params={"limit": "20", **({"cursor": cursor} if cursor else {})},
                refused=self.refused,
                refusal=bad_listing(),
            ),
            header_count(request, services),
        )
        return render(
            request,
            f"storefront/{self.shown_as}.html",
            {
                self.shown_as: found.items,
                "paged": bool(cursor),
                "next_page": paged(self.path, {}, found.next_cursor),
            },
        )


def paged(path: str, here: Mapping[str, str], cursor: str | None) -> str | None:
    """The address of the next page of a list at ``path`` (with its filters ``here``), if any."""
    return f"{path}?" + urlencode({**here, "cursor": cursor}) if cursor else None
