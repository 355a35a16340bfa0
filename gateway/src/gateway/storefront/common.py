"""What the storefront's page groups share: who the user is, the settings, the header's cart
count, the user's cart as the cart and checkout pages show it, and a few small answers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import Depends, Form, Request
from fastapi.responses import Response
from pydantic import BaseModel

from agora.auth import Principal
from agora.deps import provided
from gateway.settings import GatewaySettings
from gateway.storefront.client import ServicesClient, read
from gateway.storefront.models import Cart
from gateway.web import (
    CART_COUNT_STATE,
    PageError,
    SessionExpired,
    Unavailable,
    check_csrf,
    current_user,
    require_user,
)

_P = TypeVar("_P", bound=BaseModel)


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


async def held_cart(request: Request, services: ServicesClient) -> Cart:
    """The user's cart as the pages show it; the header's count comes with it."""
    held = await services.cart()
    setattr(request.state, CART_COUNT_STATE, held.units)
    return held


def bad_listing() -> PageError:
    return PageError(
        400, "Page not found", "This page of the list does not exist; start again from the first."
    )


def private() -> dict[str, str]:
    return {"Cache-Control": "no-store"}


def plain(status: int, text: str) -> Response:
    return Response(text + "\n", status_code=status, media_type="text/plain")


async def listing(
    services: ServicesClient,
    page: type[_P],
    service: str,
    path: str,
    *,
    what: str,
    params: Mapping[str, str],
    refused: tuple[int, ...] = (400, 422),
) -> _P:
    """One page of a service's list; a status in ``refused`` (a cursor it does not take) is
    the page of the list that does not exist."""
    reply = await services.call(service, "GET", path, what=what, params=params)
    if reply.status in refused:
        raise bad_listing()
    if reply.status != 200:
        raise Unavailable(what)
    return read(page, reply, what)


def paged(path: str, here: Mapping[str, str], cursor: str | None) -> str | None:
    """The address of the next page of a list at ``path`` (with its filters ``here``), if any."""
    return f"{path}?" + urlencode({**here, "cursor": cursor}) if cursor else None


def cursor_params(cursor: str, limit: int = 20) -> dict[str, str]:
    return {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
