"""A service's calls to another, as its adapters make them.

What goes wrong on the way (no answer came, or one that is not what was asked for) is no fault of
the caller's client: it is :class:`ServiceUnavailable` (503), saying which service failed and how,
whatever the adapter was asked for::

    reply = await call(self.client, self.service, "the catalogue", "GET", path)
    if reply.status != 200:
        raise ServiceUnavailable(f"the catalogue answered {reply.status} for products")
    with readable("the catalogue answered with unreadable products"):
        items = reply.json()["items"]
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agora.client import Reply, ServiceClient
from agora.errors import Problem, ServiceUnavailable


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
