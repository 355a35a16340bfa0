"""What the gateway's HTML pages (the storefront and the console) share: the templates
(:mod:`~gateway.web.templates`), the session cookie (:mod:`~gateway.web.session`), CSRF tokens
(:mod:`~gateway.web.csrf`), and error pages instead of problem details
(:mod:`~gateway.web.pages`, with the errors a page raises in :mod:`~gateway.web.errors`).
"""

from gateway.web.csrf import CSRF_COOKIE, CSRF_FIELD, CSRF_HEADER, check_csrf, csrf_token
from gateway.web.errors import (
    LoginRequired,
    PageError,
    PageNotFound,
    SessionExpired,
    Unavailable,
)
from gateway.web.pages import install, page_for, page_router
from gateway.web.paths import STATIC_DIR, TEMPLATES_DIR, is_page_path
from gateway.web.session import (
    SESSION_COOKIE,
    USER_STATE,
    Transport,
    clear_session,
    current_user,
    end_session,
    login_url,
    require_admin,
    require_user,
    return_path,
    safe_next,
    session_token,
    set_session,
)
from gateway.web.templates import CART_COUNT_STATE, error_page, money, render, when

__all__ = [
    "CART_COUNT_STATE",
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "STATIC_DIR",
    "TEMPLATES_DIR",
    "USER_STATE",
    "LoginRequired",
    "PageError",
    "PageNotFound",
    "SessionExpired",
    "Transport",
    "Unavailable",
    "check_csrf",
    "clear_session",
    "csrf_token",
    "current_user",
    "end_session",
    "error_page",
    "install",
    "is_page_path",
    "login_url",
    "money",
    "page_for",
    "page_router",
    "render",
    "require_admin",
    "require_user",
    "return_path",
    "safe_next",
    "session_token",
    "set_session",
    "when",
]
