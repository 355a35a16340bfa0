"""Security headers on every answer the gateway gives: its pages, their files, its error pages,
the console, and the API's answers, forwarded ones included (ADR 22).

- ``Content-Security-Policy``: on pages, scripts, styles and fonts from the gateway itself only
  (no inline script, no inline style, no ``eval``), images also from elsewhere over http(s) (a
  product's image may be hosted anywhere), no plugins, forms posted back only here, and
  ``frame-ancestors 'none'`` so that no other site can frame the console's Replay and Verify
  buttons or the checkout to clickjack them. Anything that is not a page (the API's JSON, the
  probes, the static files themselves) gets ``default-src 'none'``. FastAPI's ``/docs`` runs
  Swagger UI from its CDN with one inline script of FastAPI's own: its policy allows that
  script by its hash, and nothing else inline.
- ``X-Frame-Options: DENY`` for browsers that predate ``frame-ancestors``.
- ``X-Content-Type-Options: nosniff``; ``Referrer-Policy: same-origin`` (a page's address, an
  order's id in it, is not sent to the sites of product images; our own forms still get it, for
  the way back after logging in); ``Cross-Origin-Opener-Policy: same-origin``.
- ``Strict-Transport-Security`` when the request came over https, directly or by the word of a
  trusted proxy (a browser ignores it over plain http, RFC 6797 §8.1).

A header the answer already carries is left as it is.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import Response
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware

from agora.middleware import ASGIApp, Message, Receive, Scope, Send
from gateway.web import Transport, is_page_path

PAGE_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' https: http:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
NOT_A_PAGE_POLICY = (
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
SWAGGER_CDN = "https://cdn.jsdelivr.net"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)

Headers = list[tuple[str, str]]


class SecurityHeaders:
    """ASGI middleware adding the headers above to every answer of ``app``."""

    def __init__(self, app: ASGIApp, *, fastapi: FastAPI, transport: Transport, hsts: str) -> None:
        self.app = app
        self.headers = HeadersFor(fastapi, transport, hsts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers(scope):
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HeadersFor:
    """The security headers of an answer to the request of ``scope``."""

    def __init__(self, app: FastAPI, transport: Transport, hsts: str) -> None:
        self.app = app
        self.transport = transport
        self.hsts = hsts
        self._docs: dict[tuple[str, str], str] = {}

    def __call__(self, scope: Scope) -> Headers:
        path: str = scope["path"]
        headers = [
            ("Content-Security-Policy", self._policy(path, scope.get("root_path", ""))),
            ("X-Frame-Options", "DENY"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "same-origin"),
            ("Cross-Origin-Opener-Policy", "same-origin"),
        ]
        if self.transport.https(scope):
            headers.append(("Strict-Transport-Security", self.hsts))
        return headers

    def _policy(self, path: str, root_path: str) -> str:
        app = self.app
        if path in (app.docs_url, app.swagger_ui_oauth2_redirect_url):
            key = (path, root_path)
            if key not in self._docs:
                self._docs[key] = _docs_policy(self._docs_page(path, root_path.rstrip("/")))
            return self._docs[key]
        return PAGE_POLICY if is_page_path(path) else NOT_A_PAGE_POLICY

    def _docs_page(self, path: str, root_path: str) -> str:
        """The page FastAPI serves at ``path``, made as FastAPI makes it (its public helpers)."""
        app = self.app
        if path == app.swagger_ui_oauth2_redirect_url:
            page = get_swagger_ui_oauth2_redirect_html()
        else:
            redirect = app.swagger_ui_oauth2_redirect_url
            page = get_swagger_ui_html(
                openapi_url=root_path + (app.openapi_url or ""),
                title=f"{app.title} - Swagger UI",
                oauth2_redirect_url=root_path + redirect if redirect else None,
                init_oauth=app.swagger_ui_init_oauth,
                swagger_ui_parameters=app.swagger_ui_parameters,
            )
        return bytes(page.body).decode()


def _docs_policy(page: str) -> str:
    """Swagger UI's policy: its CDN, and the page's own inline scripts by their hashes. Its
    styles are set by its scripts, so inline styles are allowed on this page only."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(page)
    )
    return "; ".join(
        (
            "default-src 'none'",
            f"script-src {SWAGGER_CDN} {hashes}".rstrip(),
            f"style-src {SWAGGER_CDN} 'unsafe-inline'",
            "img-src 'self' data: https:",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


def install_security_headers(app: FastAPI, transport: Transport, *, hsts_max_age: int) -> None:
    """Send the headers on every answer of ``app``: outside all its middleware (a 413 or a 429
    gets them too), and on the answer to a crash, which Starlette sends from outside it."""
    hsts = f"max-age={hsts_max_age}"
    app.user_middleware.insert(
        0, Middleware(SecurityHeaders, fastapi=app, transport=transport, hsts=hsts)
    )
    headers = HeadersFor(app, transport, hsts)
    crash = app.exception_handlers.get(Exception)
    if crash is None:
        return

    async def on_crash(request: Request, error: Exception) -> Response:
        answer = crash(request, error)
        response: Response = await answer if isinstance(answer, Awaitable) else answer
        for name, value in headers(request.scope):
            response.headers.setdefault(name, value)
        return response

    app.add_exception_handler(Exception, on_crash)
