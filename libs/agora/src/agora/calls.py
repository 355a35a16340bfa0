"""A service's calls to another, as its adapters make them.

What goes wrong on the way (no answer came, or one that is not what was asked for) is no fault of
the caller's client: it is :class:`ServiceUnavailable` (503), saying which service failed and how,
whatever the adapter was asked for::

    reply = await call(self.client, self.service, "the catalogue", "GET", path)
    if reply.status != 200:
        raise ServiceUnavailable(f"the catalogue answered {reply.status} for products")
    with readable("the catalogue answered with unreadable products"):
        items = reply.json()["items"]

or, for a list of items read one by one, :func:`items` does all of that::

    products = await items(self.client, self.service, "the catalogue", path, _product, "products")
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from agora.client import Reply, ServiceClient
from agora.errors import Problem, ServiceUnavailable

_T = TypeVar("_T")


async def call(
    client: ServiceClient, service: str, who: str, method: str, path: str, *, json: Any = None
) -> Reply:
    """``service``'s answer; :class:`ServiceUnavailable` naming ``who`` when none came."""
    try:
        return await client.request(service, method, path, json=json)
    except Problem as error:
        raise ServiceUnavailable(f"{who} is unreachable: {error.detail}") from error


@contextmanager
def readable(what: str) -> Iterator[None]:
    """Read an answer's body; one that is not what was asked for is :class:`ServiceUnavailable`
    saying ``what``."""
    try:
        yield
    except (ValueError, KeyError, TypeError) as error:
        raise ServiceUnavailable(what) from error


async def items(
    client: ServiceClient, service: str, who: str, path: str, read: Callable[[Any], _T], what: str
) -> list[_T]:
    """The ``items`` of ``service``'s answer to ``GET path``, each made by ``read``; anything but a
    200 with readable items is :class:`ServiceUnavailable` naming ``who`` and ``what`` it was
    asked for."""
    reply = await call(client, service, who, "GET", path)
    if reply.status != 200:
        raise ServiceUnavailable(f"{who} answered {reply.status} for {what}")
    with readable(f"{who} answered with unreadable {what}"):
        return [read(item) for item in reply.json()["items"]]
