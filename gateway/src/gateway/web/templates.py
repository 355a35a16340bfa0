"""The pages' templates (``templates/``), with the header's state, the CSRF token and the
filters that write money and times as a shopper reads them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from agora import context
from gateway.web.csrf import CSRF_FIELD, csrf_token
from gateway.web.paths import TEMPLATES_DIR
from gateway.web.session import USER_STATE

# The request state key the pages fill in with the cart's count, for the header (base.html).
CART_COUNT_STATE = "cart_count"


def _header(request: Request) -> dict[str, Any]:
    """What base.html shows in its header, from what the page's route found out."""
    state = request.state
    return {
        "user": getattr(state, USER_STATE, None),
        "cart_count": getattr(state, CART_COUNT_STATE, None),
    }


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
