"""CSRF tokens: a signed double submit (OWASP's recommended variant). A random nonce in an
HttpOnly, SameSite=Strict cookie (``agora_csrf``), and in every form
``nonce.HMAC(secret, nonce|session)``, so a token is worthless without the cookie, the cookie
without the secret, and both in another user's session. The nonce cookie is set on the answer of
the first page that renders a form.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request
from starlette.datastructures import MutableHeaders

from agora.middleware import ASGIApp, Message, Receive, Scope, Send
from gateway.web.errors import PageError
from gateway.web.paths import is_page_path
from gateway.web.session import Transport, session_token

CSRF_COOKIE = "agora_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
EXPIRED_FORM = "The form expired; reload the page and try again."
_NONCE_STATE = "csrf_nonce"
_NEW_NONCE_STATE = "csrf_nonce_new"


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
