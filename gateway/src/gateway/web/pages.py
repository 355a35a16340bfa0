"""Errors as pages. The chassis app answers every error with problem details (JSON), which is
right for ``/api`` and wrong for a browser. Page routes are therefore made with
:func:`page_router` (its routes turn whatever they raise into a page: :class:`PageError` and its
kinds, a redirect to the login page, a 503 page when a service fails), and :func:`install` adds
the same for the app's own errors on page paths (an unknown address, a dependency used outside a
page router).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware

from agora.errors import Problem
from gateway.sessions import Sessions
from gateway.web.csrf import CsrfCookie
from gateway.web.errors import LoginRequired, PageError, SessionExpired
from gateway.web.paths import is_page_path
from gateway.web.session import Transport, clear_session, login_url
from gateway.web.templates import error_page

log = structlog.get_logger("gateway.web")


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
