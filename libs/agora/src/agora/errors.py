"""RFC 9457 problem details: one shape for every error a client sees.

Domain code raises its own named exceptions (``ProductNotFound``); a service maps each class to
an HTTP status in one table handed to :func:`agora.app.create_service_app`. Errors that are about
HTTP itself (a bad token, a body too large) are :class:`Problem` subclasses here.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

PROBLEM_JSON = "application/problem+json"
_WORD = re.compile(r"(?<!^)(?=[A-Z])")


def slug(name: str) -> str:
    """``ProductNotFound`` -> ``product-not-found``."""
    return _WORD.sub("-", name).lower()


def problem_body(
    status: int,
    title: str,
    *,
    detail: str | None = None,
    type_: str = "about:blank",
    instance: str | None = None,
    **extensions: Any,
) -> bytes:
    body: dict[str, Any] = {"type": type_, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extensions.items() if v is not None})
    return orjson.dumps(body)


class Problem(Exception):
    """An error with an HTTP meaning. A subclass names its ``status`` and ``title`` where it is
    declared: ``class NotFound(Problem, status=404, title="Not found")``."""

    status: int = 400
    title: str = "Bad request"
    headers: dict[str, str] | None = None

    def __init_subclass__(
        cls, *, status: int | None = None, title: str | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status = status
        if title is not None:
            cls.title = title

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None):
        super().__init__(detail or self.title)
        self.detail = detail
        if headers is not None:
            self.headers = headers

    @property
    def type(self) -> str:
        return f"/problems/{slug(type(self).__name__)}"


class Unauthorized(Problem, status=401, title="Authentication required"):
    """No valid token came with the request."""

    def __init__(self, detail: str | None = None):
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="agora"'})


class Forbidden(Problem, status=403, title="Not allowed"):
    """The caller is known, but may not do this."""


class NotFound(Problem, status=404, title="Not found"):
    """Nothing the caller may see is at that path."""


class PayloadTooLarge(Problem, status=413, title="Request body too large"):
    """The body is larger than the service reads."""


class TooManyRequests(Problem, status=429, title="Too many requests"):
    """The caller went past its rate limit; ``Retry-After`` says when to try again."""

    def __init__(self, detail: str | None = None, *, retry_after: float = 1.0):
        seconds = max(1, math.ceil(retry_after))
        super().__init__(detail, headers={"Retry-After": str(seconds)})
        self.retry_after = seconds


class ServiceUnavailable(Problem, status=503, title="Service unavailable"):
    """A service this request needs cannot answer now."""


class BadGateway(Problem, status=502, title="Bad gateway"):
    """A service this request needs answered something that is not an answer."""


class GatewayTimeout(Problem, status=504, title="Gateway timeout"):
    """A service this request needs did not answer in time."""
