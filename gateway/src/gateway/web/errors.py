"""The errors a page route raises: each becomes a page (or a redirect to the login page) rather
than problem details (see :mod:`gateway.web.pages`)."""

from __future__ import annotations


class PageError(Exception):
    """Answered with the error page: ``status``, a heading and a sentence for the reader."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail


class PageNotFound(PageError):
    def __init__(self, detail: str = "There is nothing at this address.") -> None:
        super().__init__(404, "Not found", detail)


class Unavailable(PageError):
    """A service failed (a 5xx, no answer): the page cannot be made now, but may be soon."""

    def __init__(self, what: str) -> None:
        super().__init__(
            503, "Unavailable", f"{what} is unavailable right now, try again in a moment."
        )
        self.what = what


class LoginRequired(Exception):
    """The page needs a user: answered with a redirect to the login page, and back after."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class SessionExpired(Exception):
    """The session cookie holds a token that no longer verifies (expired, or a key withdrawn):
    answered with the login page saying so, and the cookie cleared."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path
