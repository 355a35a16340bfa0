"""What the gateway does against clickjacking, injected script, cookies sent in clear and sessions
that outlive their logout (ADR 22): driven as a browser and an attacker would, against the shop's
fakes (``shop.py``) served over HTTP."""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from html.parser import HTMLParser
from typing import TYPE_CHECKING

import httpx
import jwt
import pytest

from agora_tools.pytest_plugin import SecondsClock
from agora_tools.testing import free_port
from gateway.bootstrap import create_app
from gateway.sessions import LocalEnds, RedisEnds, Sessions, token_facts
from gateway.settings import GatewaySettings

from .conftest import AUDIENCE, ISSUER, KID, Served, build_topology
from .shop import issue
from .test_ratelimit_redis import REDIS_URL, prefix
from .test_storefront import (  # the shop's fixtures, and how a browser uses its forms
    PASSWORD,
    Browser,
    account,
    add_to_cart,
    browser,
    check_out,
    csrf,
    log_in,
    logged_in,
    services,
    shop,
)

if TYPE_CHECKING:
    from .conftest import Keys
    from .shop import Account, Shop

__all__ = ["account", "browser", "prefix", "services", "shop"]  # fixtures, used by name

HTTPS = {"X-Forwarded-Proto": "https"}


def policy(reply: httpx.Response) -> dict[str, list[str]]:
    """The reply's Content-Security-Policy, by directive."""
    directives = [part.split() for part in reply.headers["content-security-policy"].split(";")]
    return {words[0]: words[1:] for words in directives if words}


def assert_not_frameable(reply: httpx.Response) -> None:
    assert policy(reply)["frame-ancestors"] == ["'none'"], reply.url
    assert reply.headers["x-frame-options"] == "DENY"
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["referrer-policy"] == "same-origin"


def session_cookie(reply: httpx.Response) -> set[str]:
    """The attributes of the session cookie the reply sets, in lower case."""
    cookie = next(c for c in reply.headers.get_list("set-cookie") if c.startswith("agora_session="))
    return {part.strip().lower() for part in cookie.split(";")[1:]}


def log_in_over(client: httpx.Client, account: Account, headers: dict[str, str]) -> httpx.Response:
    """Log in with ``headers`` on both requests. The form's nonce cookie is sent by hand: the
    test's client, on plain http, would keep back a Secure one as a browser does."""
    form = client.get("/login", headers=headers)
    nonce = re.search(r"agora_csrf=([^;]+)", form.headers["set-cookie"])
    assert nonce
    return client.post(
        "/login",
        data={"email": account.email, "password": PASSWORD, "next": "/", "csrf_token": csrf(form)},
        headers={**headers, "Cookie": f"agora_csrf={nonce.group(1)}"},
    )


class InlineCode(HTMLParser):
    """Finds what a policy without 'unsafe-inline' would block: inline scripts, event handler
    attributes, ``javascript:`` addresses, inline styles."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script" and not names.get("src"):
            self.found.append("an inline <script>")
        if tag == "style":
            self.found.append("a <style> element")
        for name, value in attrs:
            if name.startswith("on"):
                self.found.append(f"<{tag} {name}=...>")
            if name == "style":
                self.found.append(f"<{tag} style=...>")
            if name in ("href", "src", "action") and (value or "").strip().lower().startswith(
                "javascript:"
            ):
                self.found.append(f"<{tag} {name}=javascript:...>")


def inline_code(page: httpx.Response) -> list[str]:
    parser = InlineCode()
    parser.feed(page.text)
    return parser.found


# --- headers ------------------------------------------------------------------------------------


def test_no_page_can_be_framed_or_run_inline_script(browser: Browser, shop: Shop) -> None:
    admin = shop.add_account(f"{uuid.uuid4().hex[:8]}@example.com", PASSWORD, ("admin",))
    client = browser()
    anonymous = [client.get(path) for path in ("/", "/login", "/products/COF-BEANS-BRAZIL")]
    missing = client.get("/no/such/page")
    log_in(client, admin)
    add_to_cart(client, "COF-BEANS-BRAZIL")
    pages = [
        *anonymous,
        missing,
        client.get("/checkout"),
        client.get("/console"),
        client.get(check_out(client).headers["location"]),
    ]

    assert [page.status_code for page in pages] == [200, 200, 200, 404, 200, 200, 200]
    for page in pages:
        assert_not_frameable(page)
        scripts = policy(page)["script-src"]
        assert scripts == ["'self'"], page.url
        assert policy(page)["style-src"] == ["'self'"]
        assert policy(page)["object-src"] == ["'none'"]
        assert "strict-transport-security" not in page.headers  # plain http, no trusted proxy


def test_the_api_and_the_files_carry_the_headers_too(browser: Browser) -> None:
    client = browser()

    answers = [
        client.get("/api"),
        client.get("/api/catalog/products"),  # forwarded from the service
        client.get("/api/no-such-service/x"),  # the gateway's own problem
        client.get("/api/identity/me"),  # a 401
        client.get("/static/storefront.js"),
    ]

    assert [a.status_code for a in answers] == [200, 200, 404, 401, 200]
    for answer in answers:
        assert_not_frameable(answer)
        assert policy(answer)["default-src"] == ["'none'"]


def test_even_the_answer_to_a_crash_carries_the_headers(
    service_urls: dict[str, list[str]],
) -> None:
    app = create_app(GatewaySettings(service_urls=service_urls), topology=build_topology())

    async def crash() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/crash", crash)
    with Served(app) as client:
        reply = client.get("/crash")

    assert reply.status_code == 500
    assert_not_frameable(reply)


def test_no_page_holds_inline_script_or_style(browser: Browser, shop: Shop) -> None:
    admin = shop.add_account(f"{uuid.uuid4().hex[:8]}@example.com", PASSWORD, ("admin",))
    client = browser()
    pages = [client.get(path) for path in ("/", "/categories", "/products/GRINDER-BURR", "/nope")]
    pages += [client.get("/login"), client.get("/register")]
    log_in(client, admin)
    add_to_cart(client, "COF-BEANS-BRAZIL")
    pages += [client.get("/cart"), client.get("/checkout")]
    order = check_out(client).headers["location"]
    pages += [client.get(order), client.get("/orders"), client.get("/messages")]
    pages += [client.get("/console")]

    assert all(page.headers["content-type"].startswith("text/html") for page in pages)
    assert {str(page.url.path): inline_code(page) for page in pages} == {
        str(page.url.path): [] for page in pages
    }


def test_the_api_documents_page_runs_only_its_own_script(browser: Browser) -> None:
    page = browser().get("/docs")

    scripts = re.findall(r"<script>(.*?)</script>", page.text, re.DOTALL)
    digests = {
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in scripts
    }
    allowed = policy(page)["script-src"]
    assert scripts
    assert digests <= set(allowed)
    assert "'unsafe-inline'" not in allowed
    assert_not_frameable(page)


# --- cookies and HSTS ---------------------------------------------------------------------------


def test_behind_a_trusted_proxy_that_ended_tls_the_cookies_are_secure_and_hsts_is_sent(
    browser: Browser, account: Account
) -> None:
    client = browser(trusted_proxies="127.0.0.1")

    form = client.get("/login", headers=HTTPS)
    reply = log_in_over(browser(trusted_proxies="127.0.0.1"), account, HTTPS)

    assert reply.status_code == 303
    assert {"secure", "httponly", "samesite=lax"} <= session_cookie(reply)
    nonce = next(c for c in form.headers.get_list("set-cookie") if c.startswith("agora_csrf="))
    assert "secure" in nonce.lower().split("; ")
    assert reply.headers["strict-transport-security"] == "max-age=31536000"
    assert form.headers["strict-transport-security"] == "max-age=31536000"


def test_a_client_that_only_claims_https_gets_no_secure_cookie_nor_hsts(
    browser: Browser, account: Account
) -> None:
    # The gateway trusts no proxy here: the header is the client's own word.
    reply = log_in_over(browser(trusted_proxies=""), account, HTTPS)

    assert reply.status_code == 303
    assert "secure" not in session_cookie(reply)
    assert "strict-transport-security" not in reply.headers


def test_in_the_production_profile_the_session_cookie_is_always_secure(
    browser: Browser, account: Account
) -> None:
    reply = log_in_over(browser(profile="production", trusted_proxies=""), account, {})

    assert reply.status_code == 303
    assert {"secure", "httponly", "samesite=lax"} <= session_cookie(reply)


# --- logging out --------------------------------------------------------------------------------


def test_after_logging_out_a_copy_of_the_cookie_is_logged_out(
    browser: Browser, account: Account
) -> None:
    client = logged_in(browser, account)
    stolen = client.cookies["agora_session"]
    assert account.email in client.get("/").text

    client.post("/logout", data={"csrf_token": csrf(client.get("/"))})
    client.cookies.set("agora_session", stolen, domain="127.0.0.1", path="/")
    orders = client.get("/orders")
    home = client.get("/", follow_redirects=True)

    assert orders.status_code == 303
    assert orders.headers["location"].startswith("/login?next=%2Forders")
    assert account.email not in home.text
    assert 'action="/logout"' not in home.text


def test_after_logging_out_the_token_is_refused_by_the_api(
    browser: Browser, account: Account
) -> None:
    client = logged_in(browser, account)
    bearer = {"Authorization": f"Bearer {client.cookies['agora_session']}"}
    before = client.get("/api/catalog/products", headers=bearer)

    client.post("/logout", data={"csrf_token": csrf(client.get("/"))})
    after = [
        client.get("/api/catalog/products", headers=bearer),  # a public route too: no half-user
        client.get("/api/identity/me", headers=bearer),
    ]

    assert before.status_code == 200
    assert [reply.status_code for reply in after] == [401, 401]
    assert after[0].headers["content-type"] == "application/problem+json"
    assert after[0].json()["title"] == "Invalid access token"


def test_a_forged_cookie_naming_another_sessions_token_cannot_log_it_out(
    browser: Browser, account: Account, keys: Keys
) -> None:
    victim = browser()
    log_in(victim, account)
    token = victim.cookies["agora_session"]
    facts = token_facts(token)
    assert facts is not None
    claims = {"sub": "x", "iat": int(facts.issued_at), "exp": int(facts.expires_at)}
    forged = jwt.encode(
        {**claims, "jti": facts.id, "iss": ISSUER, "aud": AUDIENCE},
        keys.stranger,
        algorithm="EdDSA",
        headers={"kid": KID, "typ": "at+jwt"},
    )
    attacker = httpx.Client(base_url=str(victim.base_url))
    attacker.cookies.set("agora_session", forged, domain="127.0.0.1", path="/")
    form = attacker.get("/login")

    logout = attacker.post("/logout", data={"csrf_token": csrf(form)})

    assert logout.status_code == 303
    assert account.email in victim.get("/").text
    bearer = {"Authorization": f"Bearer {token}"}
    assert victim.get("/api/catalog/products", headers=bearer).status_code == 200


def test_logging_out_on_one_replica_ends_the_session_on_the_others(
    browser: Browser, account: Account, prefix: str
) -> None:
    shared = {"redis_url": REDIS_URL, "redis_prefix": prefix}
    one, other = browser(**shared), browser(**shared)
    log_in(one, account)
    token = one.cookies["agora_session"]
    bearer = {"Authorization": f"Bearer {token}"}
    before = other.get("/api/catalog/products", headers=bearer)

    one.post("/logout", data={"csrf_token": csrf(one.get("/"))})
    api = other.get("/api/catalog/products", headers=bearer)
    other.cookies.set("agora_session", token, domain="127.0.0.1", path="/")
    page = other.get("/orders")

    assert before.status_code == 200
    assert api.status_code == 401
    assert page.status_code == 303
    assert page.headers["location"].startswith("/login?next=%2Forders")


async def test_without_redis_a_replica_still_refuses_what_it_ended(keys: Keys) -> None:
    ends = RedisEnds(f"redis://127.0.0.1:{free_port()}/0", LocalEnds())
    await ends.start()
    sessions = Sessions(ends, lifetime=3600)
    token = issue(keys, sub="u1", email="ada@example.com")
    try:
        await sessions.end(token)
        still_live = await sessions.live(token)
    finally:
        await ends.close()

    assert not still_live


def test_a_session_older_than_its_lifetime_is_ended(
    browser: Browser, shop: Shop, account: Account
) -> None:
    client = browser(session_lifetime=600)
    # Issued 11 minutes ago, the token itself good for another 20.
    old = shop.token_for(account, issued_ago=660, expires_in=1200)
    client.cookies.set("agora_session", old, domain="127.0.0.1", path="/")

    reply = client.get("/orders")

    assert reply.status_code == 303
    assert reply.headers["location"] == "/login?next=%2Forders&expired=1"
    assert 'agora_session=""' in reply.headers["set-cookie"]


def test_a_session_lasts_its_own_lifetime_even_when_the_token_lives_longer(
    browser: Browser, account: Account
) -> None:
    # The fake's /token issues tokens good for 900 s.
    reply = log_in_over(browser(session_lifetime=120), account, {})

    max_age = next(a for a in session_cookie(reply) if a.startswith("max-age="))
    assert 0 < int(max_age.removeprefix("max-age=")) <= 120


# --- the ended tokens, on a clock of the test's own ---------------------------------------------


async def test_once_a_session_is_over_its_token_is_refused_until_it_expires(keys: Keys) -> None:
    clock = SecondsClock(1_800_000_000.0)
    ends = LocalEnds(clock)
    sessions = Sessions(ends, lifetime=600, clock=clock)
    token = issue(keys, sub="u1", email="ada@example.com", issued_ago=0, expires_in=3600)
    facts = token_facts(token)
    assert facts is not None
    clock.now = facts.issued_at

    kept = await sessions.begin(token, 3600)
    live_at_first = await sessions.live(token), await ends.ended(facts.id)
    clock.now += 601
    live_after = await sessions.live(token), await ends.ended(facts.id)
    clock.now = facts.expires_at + 3600
    ended_once_expired = await ends.ended(facts.id)

    assert kept == 600
    assert live_at_first == (True, False)
    assert live_after == (False, True)
    assert not ended_once_expired
    assert len(ends) == 0  # forgotten: an expired token is refused as such


async def test_a_token_without_an_id_is_ended_by_its_digest(keys: Keys) -> None:
    ends = LocalEnds()
    sessions = Sessions(ends, lifetime=3600)
    token = keys.token()  # no jti

    await sessions.end(token)

    assert not await sessions.live(token)
    assert await sessions.live(keys.token())


@pytest.mark.parametrize("token", ["", "not a token", "a.b.c"])
def test_what_is_not_a_token_has_no_facts(token: str) -> None:
    assert token_facts(token) is None
