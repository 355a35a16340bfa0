"""The services behind the storefront, called on the server for one page, with the user's token.

Every failure of a service (no answer, a 5xx) becomes :class:`~gateway.web.Unavailable`, named
for what the reader was after ("The catalogue"), so the page says what is missing; a 401 for a
token the gateway still took (a key withdrawn at identity) ends the session like an expired one.
Answers are read into the typed values of :mod:`gateway.storefront.models`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import structlog
from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError

from agora.client import Reply, ServiceClient
from agora.errors import Problem
from gateway.storefront.models import Cart, Category, Page, Shipment, Stock, Token
from gateway.web import SessionExpired, Unavailable, return_path, session_token

CATALOGUE = "The catalogue"
CART = "Your cart"
CHECKOUT = "Checkout"
ORDERS = "Your orders"
MESSAGES = "Your messages"
SHIPPING = "Delivery details"
SIGN_IN = "Signing in"
STOCK = "Stock"

log = structlog.get_logger("gateway.storefront")

_M = TypeVar("_M", bound=BaseModel)


def segment(value: str) -> str:
    """``value`` as one path segment of an onward call (a sku, an order id)."""
    return quote(value, safe="")


class ServicesClient:
    """Calls to the services for one page: ``await services.call("catalog", "GET", ...)``, or
    the typed reads the pages share (:meth:`cart`, :meth:`categories`, ...)."""

    def __init__(self, request: Request, *, anonymous: bool = False) -> None:
        resources = request.app.state.resources
        self.client: ServiceClient = resources.client
        self.token = None if anonymous else session_token(request)
        self._return_path = return_path(request)
        # Who the browser is, as the proxy tells the services (gateway.routing): identity
        # throttles logins per client, and must not see every shopper as the gateway.
        caller = resources.settings.proxies.client(request.scope)
        self._forwarded = {"X-Forwarded-For": caller.address, "X-Forwarded-Proto": caller.scheme}

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", **self._forwarded, **(extra or {})}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def call(
        self,
        service: str,
        method: str,
        path: str,
        *,
        what: str,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """The service's answer, any status below 500; :class:`Unavailable` (``what``) when it
        gave none or a 5xx."""
        try:
            reply = await self.client.request(
                service, method, path, json=json, params=params, headers=self.headers(headers)
            )
        except Problem as error:  # no answer: unreachable, timed out, cut off
            log.warning("a service did not answer a page", service=service, error=str(error))
            raise Unavailable(what) from error
        if reply.status >= 500:
            log.warning("a service failed a page", service=service, status=reply.status)
            raise Unavailable(what)
        if reply.status == 401 and self.token:
            raise SessionExpired(self._return_path)
        return reply

    async def fetch(
        self,
        model: type[_M],
        service: str,
        method: str,
        path: str,
        *,
        what: str,
        json: Any = None,
    ) -> _M:
        """The 2xx answer as ``model``; any other answer is a service misbehaving: unavailable."""
        reply = await self.call(service, method, path, what=what, json=json)
        if not 200 <= reply.status < 300:
            raise Unavailable(what)
        return read(model, reply, what)

    async def get(
        self,
        model: type[_M],
        service: str,
        path: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        refused: tuple[int, ...] = (),
        refusal: Exception | None = None,
    ) -> _M:
        """``GET path``'s 200 answer as ``model``; ``refusal`` is raised for a status in
        ``refused`` (the page's own "no such thing"), any other is unavailable."""
        reply = await self.call(service, "GET", path, what=what, params=params)
        if refusal is not None and reply.status in refused:
            raise refusal
        if reply.status != 200:
            raise Unavailable(what)
        return read(model, reply, what)

    async def cart(self) -> Cart:
        return await self.fetch(Cart, "cart", "GET", "/cart", what=CART)

    async def cart_count(self) -> int | None:
        """Units in the user's cart for the header; None when there is no user or no answer
        (the header is not worth failing a page for)."""
        if not self.token:
            return None
        try:
            return (await self.cart()).units
        except (TimeoutError, Unavailable, SessionExpired):
            return None

    async def categories(self) -> list[Category]:
        reply = await self.call("catalog", "GET", "/categories", what=CATALOGUE)
        if not 200 <= reply.status < 300:
            raise Unavailable(CATALOGUE)
        found = body(reply, CATALOGUE)
        if not isinstance(found, list):
            return []
        try:
            # An entry that is not an object is left out rather than failing the list.
            return [Category.model_validate(c) for c in found if isinstance(c, dict)]
        except ValidationError as error:
            raise Unavailable(CATALOGUE) from error

    async def stock(self, sku: str) -> str:
        """``in``, ``out`` or ``unknown`` (inventory does not answer: the page is still worth
        showing)."""
        try:
            reply = await self.call(
                "inventory", "GET", f"/inventory/stock/{segment(sku)}", what=STOCK
            )
            if reply.status != 200:
                return "unknown"
            available = read(Stock, reply, STOCK).available
        except (Unavailable, SessionExpired):
            return "unknown"
        if available is None:
            return "unknown"
        return "in" if available > 0 else "out"

    async def shipment(self, order_id: str) -> Shipment | None:
        """The order's shipment, None before shipping made one; :class:`Unavailable` when
        shipping does not answer, or answers what it should not (any refusal: the order was
        the user's, orders said so)."""
        found = await self.get(
            Page[Shipment],
            "shipping",
            "/shipments",
            what=SHIPPING,
            params={"order_id": order_id, "limit": "1"},
        )
        return found.items[0] if found.items else None

    async def sign_in(self, credentials: Mapping[str, str]) -> Token:
        return await self.fetch(Token, "identity", "POST", "/token", what=SIGN_IN, json=credentials)


def services(request: Request) -> ServicesClient:
    return ServicesClient(request)


def anonymous_services(request: Request) -> ServicesClient:
    """The services called on nobody's behalf: signing in, or what is the same for everyone."""
    return ServicesClient(request, anonymous=True)


Services = Annotated[ServicesClient, Depends(services)]
Anonymous = Annotated[ServicesClient, Depends(anonymous_services)]


def read(model: type[_M], reply: Reply, what: str) -> _M:
    """``reply``'s body as ``model``; a body of another shape is :class:`Unavailable`."""
    try:
        return model.model_validate(body(reply, what))
    except ValidationError as error:
        raise Unavailable(what) from error


def body(reply: Reply, what: str) -> Any:
    try:
        return reply.json()
    except ValueError as error:
        raise Unavailable(what) from error


def problem(reply: Reply) -> dict[str, Any]:
    """A refusal's problem document, or an empty one when the body is not one."""
    try:
        found = reply.json()
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def problem_type(reply: Reply) -> str:
    """The last segment of a problem's ``type`` (``/problems/empty-cart`` -> ``empty-cart``)."""
    kind = problem(reply).get("type")
    return kind.rsplit("/", 1)[-1] if isinstance(kind, str) else ""
