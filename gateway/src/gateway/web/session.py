"""The session: the user's access token from identity, kept in an HttpOnly cookie
(``agora_session``) that lives as long as the token does, or the session's own lifetime when that
is shorter; each request verifies it with the app's token verifier, as the proxy does for a bearer
token, and asks :class:`~gateway.sessions.Sessions` whether the session goes on (logging out ends
the token at once, on every replica). The cookies are ``Secure`` when the browser came over https,
directly or by a trusted proxy's word, and always in the production profile (ADR 22).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import Request
from fastapi.responses import Response

from agora.auth import Principal
from agora.errors import Problem, Unauthorized
from agora.forwarded import TrustedProxies
from gateway.sessions import Sessions
from gateway.web.errors import LoginRequired, PageError, SessionExpired, Unavailable

SESSION_COOKIE = "agora_session"
# The request state key of the user, for the header (base.html).
USER_STATE = "user"


@dataclass(frozen=True, slots=True)
class Transport:
    """How browsers reach the gateway: whether a request came over https (itself, or by the word
    of a trusted proxy that ended TLS), and whether cookies are Secure whatever the request."""

    proxies: TrustedProxies
    always_secure: bool = False

    def https(self, scope: Mapping[str, Any]) -> bool:
        return self.proxies.client(scope).scheme == "https"

    def secure_cookies(self, scope: Mapping[str, Any]) -> bool:
        return self.always_secure or self.https(scope)


def _transport(request: Request) -> Transport:
    transport: Transport = request.app.state.transport
    return transport


def _sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


def session_token(request: Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE) or None


async def set_session(response: Response, request: Request, token: str, expires_in: int) -> None:
    """Log the browser in: the access token in the session cookie, for the session's lifetime
    (the token's, when that is shorter)."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=await _sessions(request).begin(token, expires_in),
        path="/",
        httponly=True,
        samesite="lax",
        secure=_transport(request).secure_cookies(request.scope),
    )


async def end_session(response: Response, request: Request) -> None:
    """Log the browser out: its token is refused from now on, and the cookie is cleared.

    Only a token that verifies is put on the list of ended tokens: the list must not grow with
    whatever a client puts in its cookie."""
    try:
        user = await current_user(request)
    except (SessionExpired, PageError, Problem):
        user = None  # nothing to end, or it cannot be checked now: the cookie goes all the same
    if user is not None:
        await _sessions(request).end(user.token)
    clear_session(response, request)


def clear_session(response: Response, request: Request) -> None:
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        httponly=True,
        samesite="lax",
        secure=_transport(request).secure_cookies(request.scope),
    )


async def current_user(request: Request) -> Principal | None:
    """Who is logged in: None without a session cookie; :class:`SessionExpired` when its token
    no longer verifies. The answer is kept on the request (base.html shows it)."""
    state = request.state
    if (known := getattr(state, USER_STATE, None)) is not None:
        return known  # type: ignore[no-any-return]
    token = session_token(request)
    if token is None:
        return None
    verifier = request.app.state.resources.verifier
    if verifier is None:
        raise Unavailable("Signing in")
    try:
        principal: Principal = await verifier.verify(token)
    except Unauthorized as error:
        raise SessionExpired(return_path(request)) from error
    if not await _sessions(request).live(token):  # logged out, or past the session's lifetime
        raise SessionExpired(return_path(request))
    setattr(state, USER_STATE, principal)
    return principal


async def require_user(request: Request) -> Principal:
    """A dependency: the logged-in user, or a redirect to the login page (and back after)."""
    user = await current_user(request)
    if user is None:
        raise LoginRequired(return_path(request))
    return user


async def require_admin(request: Request) -> Principal:
    """A dependency: the logged-in admin; another user gets a 403 page."""
    user = await require_user(request)
    if not user.is_admin:
        raise PageError(403, "Not allowed", "This page is for administrators.")
    return user


def return_path(request: Request) -> str:
    """Where to come back to after logging in: this page, or for a form's POST the page that
    showed the form (its Referer, when it is one of ours)."""
    if request.method in ("GET", "HEAD"):
        url = request.url
        return url.path + (f"?{url.query}" if url.query else "")
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.netloc and referer.netloc == request.url.netloc:
        return safe_next(referer.path + (f"?{referer.query}" if referer.query else ""))
    return "/"


def safe_next(value: str | None, default: str = "/") -> str:
    """``value`` when it is a path on this site; anything else (``//evil``, ``https://...``) is
    ``default``, so that a link cannot send a user elsewhere after logging in."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return default
    if any(ch in value for ch in "\r\n\t\\"):
        return default
    return value


def login_url(next_path: str, *, expired: bool = False) -> str:
    query: dict[str, str] = {"next": safe_next(next_path)}
    if expired:
        query["expired"] = "1"
    return "/login?" + urlencode(query)
