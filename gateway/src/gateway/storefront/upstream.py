"""The services behind the storefront, called on the server for one page, with the user's token.

Every failure of a service (no answer, a 5xx) becomes :class:`~gateway.web.Unavailable`, named
for what the reader was after ("The catalogue"), so the page says what is missing; a 401 for a
token the gateway still took (a key withdrawn at identity) ends the session like an expired one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import structlog
from fastapi import Request

from agora.client import Reply, ServiceClient
from agora.errors import Problem
from gateway.web import SessionExpired, Unavailable, return_path, session_token

CATALOGUE = "The catalogue"
CART = "Your cart"
CHECKOUT = "Checkout"
ORDERS = "Your orders"
MESSAGES = "Your messages"
SIGN_IN = "Signing in"

log = structlog.get_logger("gateway.storefront")


def segment(value: str) -> str:
    """``value`` as one path segment of an onward call (a sku, an order id)."""
    return quote(value, safe="")


class Shop:
    """Calls to the services for one request: ``await shop.call("catalog", "GET", ...)``."""

    def __init__(self, request: Request) -> None:
        resources = request.app.state.resources
        self.client: ServiceClient = resources.client
        self.token = session_token(request)
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

    async def json(
        self,
        service: str,
        method: str,
        path: str,
        *,
        what: str,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """The body of a 2xx answer; any other answer is a service misbehaving: unavailable."""
        reply = await self.call(service, method, path, what=what, json=json, params=params)
        if not 200 <= reply.status < 300:
            raise Unavailable(what)
        return body(reply, what)

    async def cart_count(self) -> int | None:
        """Units in the user's cart for the header; None when there is no user or no answer
        (the header is not worth failing a page for)."""
        if not self.token:
            return None
        try:
            cart = await self.json("cart", "GET", "/cart", what=CART)
        except (TimeoutError, Unavailable, SessionExpired):
            return None
        return cart_units(cart)


def body(reply: Reply, what: str) -> Any:
    try:
        return reply.json()
    except ValueError as error:
        raise Unavailable(what) from error


def cart_units(cart: Any) -> int | None:
    try:
        return sum(int(item["quantity"]) for item in cart["items"])
    except (KeyError, TypeError, ValueError):
        return None


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
