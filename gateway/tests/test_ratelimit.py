"""Each user, or anonymous client, gets a bucket of requests: a burst, then a steady rate, then 429
with Retry-After; logging in and registering have tighter buckets of their own per client."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
import pytest

from agora_tools.pytest_plugin import SecondsClock
from agora_tools.testing import assert_problem
from gateway.ratelimit import TokenBuckets
from gateway.settings import GatewaySettings

if TYPE_CHECKING:
    from .conftest import Keys, StartGateway, Upstream


async def test_a_client_may_send_its_burst_then_is_told_how_long_to_wait() -> None:
    clock = SecondsClock()
    buckets = TokenBuckets(rate=2.0, burst=3, clock=clock)

    assert [await buckets.take("ada") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert await buckets.take("ada") == pytest.approx(0.5)


async def test_tokens_come_back_at_the_rate() -> None:
    clock = SecondsClock()
    buckets = TokenBuckets(rate=2.0, burst=3, clock=clock)
    for _ in range(3):
        await buckets.take("ada")

    clock.now += 1.0

    assert [await buckets.take("ada") for _ in range(2)] == [0.0, 0.0]
    assert await buckets.take("ada") > 0


async def test_a_refused_request_costs_no_token() -> None:
    clock = SecondsClock()
    buckets = TokenBuckets(rate=1.0, burst=1, clock=clock)
    await buckets.take("ada")
    for _ in range(10):
        await buckets.take("ada")

    clock.now += 1.0

    assert await buckets.take("ada") == 0.0


async def test_clients_have_buckets_of_their_own() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, clock=SecondsClock())
    await buckets.take("ada")

    assert await buckets.take("ada") > 0
    assert await buckets.take("grace") == 0.0


async def test_idle_clients_are_forgotten() -> None:
    clock = SecondsClock()
    buckets = TokenBuckets(rate=10.0, burst=20, clock=clock)
    for client in range(100):
        await buckets.take(f"client-{client}")

    clock.now += 2.0  # long enough for every bucket to be full again
    for _ in range(60):
        await buckets.take("ada")

    assert len(buckets) == 1


async def test_memory_stays_bounded_under_many_clients() -> None:
    buckets = TokenBuckets(rate=1.0, burst=5, max_clients=50, clock=SecondsClock())

    for client in range(1000):
        await buckets.take(f"client-{client}")

    assert len(buckets) == 50


def test_the_rate_and_burst_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGORA_GATEWAY_RATE_LIMIT", "25")
    monkeypatch.setenv("AGORA_GATEWAY_RATE_BURST", "40")

    settings = GatewaySettings()

    assert (settings.rate_limit, settings.rate_burst) == (25.0, 40)
    assert GatewaySettings.model_fields["port"].default == 8000


def test_a_client_over_its_burst_gets_429_with_retry_after(start_gateway: StartGateway) -> None:
    # One token every thousand seconds: none comes back while the test runs.
    gateway = start_gateway(rate_limit=0.001, rate_burst=3)

    answers = [gateway.get("/api/catalog/products") for _ in range(4)]

    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    problem = assert_problem(refused, 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert problem["request_id"] == refused.headers["x-request-id"]


def test_probes_are_never_limited(start_gateway: StartGateway) -> None:
    gateway = start_gateway(rate_limit=0.001, rate_burst=1)
    gateway.get("/api")

    assert gateway.get("/api").status_code == 429
    assert [gateway.get("/livez").status_code for _ in range(5)] == [200] * 5
    assert gateway.get("/readyz").status_code == 200
    # Not limited; it asks for the operator's token instead.
    assert gateway.get("/metrics").status_code == 401


# --- whose bucket: a user's, or an anonymous client's address -----------------------------------

CATALOG = "/api/catalog/products"


def test_a_flood_from_one_address_leaves_a_user_at_that_address_served(
    start_gateway: StartGateway, keys: Keys
) -> None:
    gateway = start_gateway(rate_limit=0.001, rate_burst=3)
    ada = {"authorization": f"Bearer {keys.token()}"}

    flood = [gateway.get(CATALOG).status_code for _ in range(4)]
    served = [gateway.get(CATALOG, headers=ada).status_code for _ in range(3)]

    assert flood == [200, 200, 200, 429]
    assert served == [200, 200, 200]
    # The user's bucket is the user's own, not a way round the limit.
    assert gateway.get(CATALOG, headers=ada).status_code == 429


def test_a_shopper_logged_in_on_the_storefront_spends_from_their_own_bucket(
    start_gateway: StartGateway, keys: Keys
) -> None:
    gateway = start_gateway(rate_limit=0.001, rate_burst=2)
    flood = [gateway.get(CATALOG).status_code for _ in range(3)]

    session = {"cookie": f"agora_csrf=x; agora_session={keys.token()}"}
    served = [gateway.get(CATALOG, headers=session).status_code for _ in range(2)]

    assert flood == [200, 200, 429]
    assert served == [200, 200]


@pytest.mark.parametrize(
    "forged",
    [
        lambda keys: keys.token(key=keys.stranger),
        lambda keys: keys.token(expires_in=-600),
        lambda keys: "not-a-jwt",
    ],
    ids=["signed by a stranger", "expired", "not a jwt"],
)
def test_a_token_that_does_not_verify_buys_no_bucket_of_its_own(
    start_gateway: StartGateway, keys: Keys, forged: Callable[[Keys], str]
) -> None:
    gateway = start_gateway(rate_limit=0.001, rate_burst=2)
    spent = [gateway.get(CATALOG).status_code for _ in range(2)]

    # A fresh token, with a subject of its own, on every request.
    refused = [
        gateway.get(CATALOG, headers={"authorization": f"Bearer {forged(keys)}"}).status_code
        for _ in range(3)
    ]

    assert spent == [200, 200]
    assert refused == [429, 429, 429]


def test_a_client_cannot_buy_fresh_buckets_by_naming_itself_in_x_forwarded_for(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway(rate_limit=0.001, rate_burst=2)

    answers = [
        gateway.get(CATALOG, headers={"x-forwarded-for": f"203.0.113.{n}"}).status_code
        for n in range(1, 4)
    ]

    assert answers == [200, 200, 429]


def test_behind_a_trusted_proxy_each_client_it_forwards_for_has_a_bucket_of_its_own(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway(rate_limit=0.001, rate_burst=2, trusted_proxies="127.0.0.1")
    ada = {"x-forwarded-for": "203.0.113.1"}
    grace = {"x-forwarded-for": "203.0.113.2"}

    adas = [gateway.get(CATALOG, headers=ada).status_code for _ in range(3)]
    graces = [gateway.get(CATALOG, headers=grace).status_code for _ in range(2)]

    assert adas == [200, 200, 429]
    assert graces == [200, 200]


def test_the_trusted_proxies_come_from_the_environment_and_default_to_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not GatewaySettings().proxies

    monkeypatch.setenv("AGORA_GATEWAY_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.7")
    proxies = GatewaySettings().proxies

    assert proxies.trusts("10.1.2.3")
    assert proxies.trusts("192.0.2.7")
    assert not proxies.trusts("127.0.0.1")


# --- logging in and registering: attempts per client per minute ----------------------------------

TOKEN = "/api/identity/token"
USERS = "/api/identity/users"


def attempt(gateway: httpx.Client, path: str, headers: dict[str, str] | None = None) -> int:
    credentials = {"email": f"{uuid.uuid4().hex[:8]}@example.com", "password": "a guess"}
    return gateway.post(path, json=credentials, headers=headers).status_code


def test_logins_past_the_limit_get_429_with_retry_after_while_the_rest_is_served(
    start_gateway: StartGateway, identity: Upstream
) -> None:
    # Two a minute: the next token comes back after 30 s, longer than the test takes.
    gateway = start_gateway(login_rate_limit=2)
    before = len(identity.requests_to("/token"))

    answers = [
        gateway.post(TOKEN, json={"email": f"{n}@example.com", "password": "a guess"})
        for n in range(3)
    ]

    assert [answer.status_code for answer in answers] == [401, 401, 429]
    refused = answers[-1]
    problem = assert_problem(refused, 429)
    assert 1 <= int(refused.headers["retry-after"]) <= 30
    assert "login attempts" in problem["detail"]
    assert len(identity.requests_to("/token")) - before == 2
    assert gateway.get(CATALOG).status_code == 200
    assert attempt(gateway, USERS) == 201


def test_each_client_has_its_own_login_attempts(start_gateway: StartGateway) -> None:
    gateway = start_gateway(login_rate_limit=2, trusted_proxies="127.0.0.1")
    flood = {"x-forwarded-for": "198.51.100.7"}
    ada = {"x-forwarded-for": "203.0.113.1"}

    flooded = [attempt(gateway, TOKEN, flood) for _ in range(5)]
    adas = [attempt(gateway, TOKEN, ada) for _ in range(2)]

    assert flooded == [401, 401, 429, 429, 429]
    assert adas == [401, 401]


def test_a_logged_in_user_gets_no_more_login_attempts_than_their_address(
    start_gateway: StartGateway, keys: Keys
) -> None:
    gateway = start_gateway(login_rate_limit=2)
    ada = {"authorization": f"Bearer {keys.token()}"}

    answers = [attempt(gateway, TOKEN) for _ in range(2)] + [attempt(gateway, TOKEN, ada)]

    assert answers == [401, 401, 429]


def test_registrations_past_the_limit_get_429_and_leave_logging_in_alone(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway(register_rate_limit=2)

    registrations = [attempt(gateway, USERS) for _ in range(3)]

    assert registrations == [201, 201, 429]
    assert attempt(gateway, TOKEN) == 401


def test_the_storefronts_login_form_spends_from_the_same_attempts_and_gets_a_page(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway(login_rate_limit=2)
    spent = [attempt(gateway, TOKEN) for _ in range(2)]

    page = gateway.post("/login", data={"email": "ada@example.com", "password": "a guess"})

    assert spent == [401, 401]
    assert page.status_code == 429
    assert page.headers["content-type"].startswith("text/html")
    assert int(page.headers["retry-after"]) >= 1
    assert "Too many login attempts" in page.text


def test_the_login_and_registration_limits_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = GatewaySettings()
    monkeypatch.setenv("AGORA_GATEWAY_LOGIN_RATE_LIMIT", "5")
    monkeypatch.setenv("AGORA_GATEWAY_REGISTER_RATE_LIMIT", "3")

    settings = GatewaySettings()

    # Enough for a person, or a test suite, to log in several users in a row.
    assert defaults.login_rate_limit >= 10
    assert defaults.register_rate_limit >= 10
    assert (settings.login_rate_limit, settings.register_rate_limit) == (5, 3)
