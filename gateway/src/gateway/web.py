"""What the gateway's HTML pages (the storefront and the console) share: the templates, the
session cookie, CSRF tokens, and error pages instead of problem details.

The session is the user's access token from identity, kept in an HttpOnly cookie
(``agora_session``) that lives as long as the token does, or the session's own lifetime when that
is shorter; each request verifies it with the app's token verifier, as the proxy does for a bearer
token, and asks :class:`~gateway.sessions.Sessions` whether the session goes on (logging out ends
the token at once, on every replica). The cookies are ``Secure`` when the browser came over https,
directly or by a trusted proxy's word, and always in the production profile (ADR 22).

CSRF is a signed double submit (OWASP's recommended variant): a random nonce in an HttpOnly,
SameSite=Strict cookie (``agora_csrf``), and in every form ``nonce.HMAC(secret, nonce|session)``,
so a token is worthless without the cookie, the cookie without the secret, and both in another
user's session. The nonce cookie is set on the answer of the first page that renders a form.

The chassis app answers every error with problem details (JSON), which is right for ``/api`` and
wrong for a browser. Page routes are therefore made with :func:`page_router` (its routes turn
whatever they raise into a page: :class:`PageError` and its kinds, a redirect to the login page,
a 503 page when a service fails), and :func:`install` adds the same for the app's own errors on
page paths (an unknown address, a dependency used outside a page router).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import jinja2
import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware

from agora import context
from agora.auth import Principal
from agora.errors import Problem, Unauthorized
from agora.forwarded import TrustedProxies
from agora.middleware import ASGIApp, Message, Receive, Scope, Send
from gateway.sessions import Sessions

log = structlog.get_logger("gateway.web")

SESSION_COOKIE = "agora_session"
CSRF_COOKIE = "agora_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
# Paths that are not pages: the proxied API, the probes and the API documents keep problem details.
NOT_PAGES = ("/api", "/livez", "/readyz", "/metrics", "/docs", "/openapi.json", "/static/")
EXPIRED_FORM = "The form expired; reload the page and try again."
# The request state keys the pages fill in for the header (base.html).
USER_STATE = "user"
CART_COUNT_STATE = "cart_count"
_NONCE_STATE = "csrf_nonce"
_NEW_NONCE_STATE = "csrf_nonce_new"


# --- errors that become pages -------------------------------------------------------------------


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


# --- templates ----------------------------------------------------------------------------------


def _header(request: Request) -> dict[str, Any]:
    """What base.html shows in its header, from what the page's route found out."""
    state = request.state
    return {
        "user": getattr(state, USER_STATE, None),
        "cart_count": getattr(state, CART_COUNT_STATE, None),
    }


def csrf_token(request: Request) -> str:
    """The CSRF token for the forms of this page (``{{ csrf_token(request) }}`` in a template).

    Made from the request's nonce cookie, or from a new nonce that the answer then sets."""
    state = request.state
    nonce: str | None = getattr(state, _NONCE_STATE, None)
    if nonce is None:
        nonce = request.cookies.get(CSRF_COOKIE, "")
        if not _well_formed_nonce(nonce):
            nonce = secrets.token_urlsafe(24)
            setattr(state, _NEW_NONCE_STATE, nonce)
        setattr(state, _NONCE_STATE, nonce)
    return f"{nonce}.{_signature(request, nonce)}"


# Currencies whose minor unit is the unit itself (ISO 4217 exponent 0).
_WHOLE_CURRENCIES = frozenset({"JPY", "KRW", "ISK", "CLP", "VND", "XAF", "XOF"})
_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£"}


def money(minor: object, currency: object = "EUR") -> str:
    """``1250, "EUR"`` -> ``€12.50``: an amount in minor units as a shopper reads it."""
    if not isinstance(minor, int):
        return ""
    code = str(currency or "").upper()
    amount = f"{minor:,}" if code in _WHOLE_CURRENCIES else f"{minor / 100:,.2f}"
    symbol = _SYMBOLS.get(code)
    return f"{symbol}{amount}" if symbol else f"{amount} {code}".strip()


def when(value: object) -> str:
    """An ISO 8601 time (as the services send them) as ``3 Mar 2025, 14:05 UTC``."""
    if not isinstance(value, str):
        return ""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return f"{moment.day} {moment:%b %Y, %H:%M} UTC"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.ChainableUndefined,
    )
    env.globals["csrf_token"] = csrf_token
    env.globals["CSRF_FIELD"] = CSRF_FIELD
    env.filters["money"] = money
    env.filters["when"] = when
    return env


templates = Jinja2Templates(env=_environment(), context_processors=[_header])


def render(
    request: Request,
    name: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """A page from ``templates/<name>``, with the request in its context."""
    response = templates.TemplateResponse(
        request, name, dict(context or {}), status_code=status, headers=headers
    )
    # Pages show a user's own data: never from a shared cache.
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def error_page(request: Request, status: int, title: str, detail: str) -> HTMLResponse:
    """The error page (``templates/error.html``) with ``status``."""
    page = {"status": status, "title": title, "detail": detail}
    return render(
        request, "error.html", {**page, "request_id": context.request_id.get()}, status=status
    )


# --- the session --------------------------------------------------------------------------------


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


# --- CSRF ---------------------------------------------------------------------------------------


def _secret(request: Request) -> bytes:
    secret: bytes = request.app.state.session_secret
    return secret


def _signature(request: Request, nonce: str) -> str:
    # Bound to the session: a token taken from one session is no good in another. A digest of
    # the cookie rather than the token itself, so the secret's HMAC input stays short.
    session = hashlib.sha256((session_token(request) or "").encode()).hexdigest()
    message = f"{nonce}|{session}".encode()
    return hmac.new(_secret(request), message, hashlib.sha256).hexdigest()


def _well_formed_nonce(nonce: str) -> bool:
    return 16 <= len(nonce) <= 64 and nonce.replace("-", "").replace("_", "").isalnum()


async def check_csrf(request: Request) -> None:
    """A dependency for every form's POST: the token (form field ``csrf_token`` or header
    ``X-CSRF-Token``) must match the nonce cookie and this session, else a 403 page."""
    token = request.headers.get(CSRF_HEADER)
    if token is None and request.method not in ("GET", "HEAD"):
        form = await request.form()
        field = form.get(CSRF_FIELD)
        token = field if isinstance(field, str) else None
    nonce = request.cookies.get(CSRF_COOKIE, "")
    if not token or not _well_formed_nonce(nonce):
        raise PageError(403, "Form expired", EXPIRED_FORM)
    sent_nonce, _, signature = token.partition(".")
    expected = _signature(request, nonce)
    if not (
        hmac.compare_digest(sent_nonce.encode(), nonce.encode())
        and hmac.compare_digest(signature.encode(), expected.encode())
    ):
        raise PageError(403, "Form expired", EXPIRED_FORM)


class CsrfCookie:
    """Sets the nonce cookie on an answer whose page made a new one (see :func:`csrf_token`)."""

    def __init__(self, app: ASGIApp, *, transport: Transport) -> None:
        self.app = app
        self.transport = transport

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_page_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        # Where csrf_token() leaves a new nonce (request.state); made here so it is this dict.
        state = scope.setdefault("state", {})

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                nonce = state.get(_NEW_NONCE_STATE)
                if nonce:
                    secure = "; Secure" if self.transport.secure_cookies(scope) else ""
                    MutableHeaders(scope=message).append(
                        "set-cookie",
                        f"{CSRF_COOKIE}={nonce}; Path=/; HttpOnly; SameSite=Strict{secure}",
                    )
            await send(message)

        await self.app(scope, receive, send_with_cookie)


# --- errors as pages ----------------------------------------------------------------------------


def is_page_path(path: str) -> bool:
    return not any(path == p.rstrip("/") or path.startswith(p.rstrip("/") + "/") for p in NOT_PAGES)


def page_for(request: Request, error: Exception) -> Response:
    """The answer a page gives for ``error``: a page or a redirect, never problem details."""
    if isinstance(error, SessionExpired):
        response: Response = RedirectResponse(login_url(error.next_path, expired=True), 303)
        clear_session(response, request)
        return response
    if isinstance(error, LoginRequired):
        return RedirectResponse(login_url(error.next_path), 303)
    if isinstance(error, PageError):
        return error_page(request, error.status, error.title, error.detail)
    if isinstance(error, RequestValidationError):
        return error_page(
            request, 400, "Bad request", "Something in this address or form is not valid."
        )
    if isinstance(error, StarletteHTTPException):
        if error.status_code == 404:
            return error_page(request, 404, "Not found", "There is nothing at this address.")
        if error.status_code == 405:
            return error_page(
                request, 405, "Not allowed", "This address does not take that kind of request."
            )
        return error_page(request, error.status_code, "Request failed", str(error.detail))
    if isinstance(error, Problem):
        if error.status >= 500:
            log.warning("a page could not be made", path=request.url.path, error=str(error))
            return error_page(
                request,
                503,
                "Unavailable",
                "This page is unavailable right now, try again in a moment.",
            )
        return error_page(request, error.status, error.title, error.detail or error.title)
    log.exception("a page failed", path=request.url.path, exc_info=error)
    return error_page(
        request,
        500,
        "Something went wrong",
        "The error was logged; try again in a moment.",
    )


class PageRoute(APIRoute):
    """A route whose errors (its own, its dependencies', its parameters') become pages."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_page(request: Request) -> Response:
            try:
                return await handle(request)
            except Exception as error:
                return page_for(request, error)

        return handle_page


def page_router(**options: Any) -> APIRouter:
    """An APIRouter for pages: errors become pages, and the pages stay out of the API document."""
    options.setdefault("include_in_schema", False)
    return APIRouter(route_class=PageRoute, **options)


def install(
    app: FastAPI, *, session_secret: str = "", transport: Transport, sessions: Sessions
) -> None:
    """Make ``app`` serve pages: the CSRF secret (a random one when empty; several replicas need
    the same one), the nonce cookie, the sessions, how browsers reach it (for Secure cookies),
    and pages rather than problems on page paths for what the app answers itself (an unknown
    address, a page error raised outside a page router)."""
    app.state.session_secret = (
        session_secret.encode() if session_secret else secrets.token_bytes(32)
    )
    app.state.transport = transport
    app.state.sessions = sessions
    app.user_middleware.append(Middleware(CsrfCookie, transport=transport))
    for error_class in (PageError, LoginRequired, SessionExpired):
        app.add_exception_handler(error_class, _as_page)
    plain = app.exception_handlers.get(StarletteHTTPException)

    async def http_error(request: Request, error: Exception) -> Response:
        if is_page_path(request.url.path) or plain is None:
            return page_for(request, error)
        answer = plain(request, error)
        return await answer if isinstance(answer, Awaitable) else answer

    app.add_exception_handler(StarletteHTTPException, http_error)


async def _as_page(request: Request, error: Exception) -> Response:
    return page_for(request, error)
