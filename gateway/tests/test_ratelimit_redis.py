"""With a Redis, every gateway replica spends from one bucket per client; without one that
answers, each gateway limits on its own and keeps serving.

Against the Redis on 127.0.0.1:6379, which is shared: every test writes under a prefix of its
own and deletes only its own keys.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import jwt
import pytest
import redis

from agora.logs import LOGS_KEPT, configure_logging, recent_logs
from agora_tools.pytest_plugin import SecondsClock
from agora_tools.testing import assert_problem, free_port, require_server
from gateway.ratelimit import RedisBuckets, TokenBuckets

if TYPE_CHECKING:
    from .conftest import Keys, StartGateway

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    require_server("127.0.0.1", 6379, "Redis")
    prefix = f"agora-test:{uuid.uuid4()}:"
    yield prefix
    with redis.Redis.from_url(REDIS_URL) as client:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)


def limiter(url: str, prefix: str, *, rate: float, burst: int) -> RedisBuckets:
    return RedisBuckets(url, TokenBuckets(rate, burst), prefix=prefix)


@pytest.fixture
async def slow_refill(prefix: str) -> AsyncIterator[RedisBuckets]:
    """Buckets of 3 that get a token back every thousand seconds: none while a test runs."""
    buckets = limiter(REDIS_URL, prefix, rate=0.001, burst=3)
    await buckets.start()
    yield buckets
    await buckets.close()


def test_a_client_that_spent_its_burst_on_one_gateway_is_refused_by_the_other(
    start_gateway: StartGateway, prefix: str
) -> None:
    shared = {"redis_url": REDIS_URL, "redis_prefix": prefix, "rate_limit": 0.001}
    one = start_gateway(rate_burst=3, **shared)
    other = start_gateway(rate_burst=3, **shared)

    spent = [one.get("/api/catalog/products").status_code for _ in range(3)]
    refused = other.get("/api/catalog/products")

    assert spent == [200, 200, 200]
    assert_problem(refused, 429)
    assert int(refused.headers["retry-after"]) >= 1


async def test_redis_answers_as_the_in_process_buckets_do(slow_refill: RedisBuckets) -> None:
    local = TokenBuckets(rate=0.001, burst=3)

    in_redis = [await slow_refill.take("ada") for _ in range(5)]
    in_process = [await local.take("ada") for _ in range(5)]

    assert in_redis[:3] == in_process[:3] == [0.0, 0.0, 0.0]
    # Refused, and told to come back when the next token is there: in about 1000 s.
    assert in_redis[3:] == pytest.approx(in_process[3:], rel=1e-3)


async def test_clients_have_buckets_of_their_own(slow_refill: RedisBuckets) -> None:
    for _ in range(3):
        await slow_refill.take("ada")

    assert await slow_refill.take("ada") > 0
    assert await slow_refill.take("grace") == 0.0


async def test_tokens_come_back_at_the_rate(prefix: str) -> None:
    buckets = limiter(REDIS_URL, prefix, rate=5.0, burst=1)
    await buckets.start()
    try:
        await buckets.take("ada")
        wait = await buckets.take("ada")
        # Once told to wait, waiting that long (and a little more for the clocks) is enough.
        await asyncio.sleep(wait + 0.05)
        again = await buckets.take("ada")
    finally:
        await buckets.close()

    assert 0 < wait <= 0.2
    assert again == 0.0


async def test_a_bucket_is_one_key_that_expires_when_it_would_be_full_again(
    slow_refill: RedisBuckets, prefix: str
) -> None:
    await slow_refill.take("ada")

    with redis.Redis.from_url(REDIS_URL) as client:
        keys = [key.decode() for key in client.scan_iter(match=f"{prefix}*")]
        ttl = client.pttl(f"{prefix}bucket:ada")

    assert keys == [f"{prefix}bucket:ada"]
    # One token spent, at one per thousand seconds: full again in a thousand seconds.
    assert 990_000 < ttl <= 1_000_000


def test_login_attempts_spent_on_one_gateway_are_refused_by_the_other(
    start_gateway: StartGateway, prefix: str
) -> None:
    shared = {"redis_url": REDIS_URL, "redis_prefix": prefix, "login_rate_limit": 2}
    one, other = start_gateway(**shared), start_gateway(**shared)
    guess = {"email": "ada@example.com", "password": "a guess"}

    spent = [one.post("/api/identity/token", json=guess).status_code for _ in range(2)]
    refused = other.post("/api/identity/token", json=guess)

    assert spent == [401, 401]
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    with redis.Redis.from_url(REDIS_URL) as client:
        assert client.exists(f"{prefix}bucket:login:127.0.0.1")


def test_a_users_requests_are_counted_in_redis_under_the_user(
    start_gateway: StartGateway, prefix: str, keys: Keys
) -> None:
    shared = {"redis_url": REDIS_URL, "redis_prefix": prefix, "rate_limit": 0.001}
    one, other = start_gateway(rate_burst=2, **shared), start_gateway(rate_burst=2, **shared)
    token = keys.token()
    user = {"authorization": f"Bearer {token}"}

    spent = [one.get("/api/catalog/products", headers=user).status_code for _ in range(2)]
    refused = other.get("/api/catalog/products", headers=user)
    anonymous = other.get("/api/catalog/products")

    assert spent == [200, 200]
    assert refused.status_code == 429
    assert anonymous.status_code == 200
    subject = jwt.decode(token, options={"verify_signature": False})["sub"]
    with redis.Redis.from_url(REDIS_URL) as client:
        assert client.exists(f"{prefix}bucket:user:{subject}")


def test_without_redis_the_gateway_limits_on_its_own_and_says_why(
    start_gateway: StartGateway,
) -> None:
    away = f"redis://127.0.0.1:{free_port()}/0"
    gateway = start_gateway(redis_url=away, rate_limit=0.001, rate_burst=3)

    health = gateway.get("/api")
    answers = [gateway.get("/api/catalog/products").status_code for _ in range(3)]

    assert health.status_code == 200
    assert health.json()["redis"]["url"] == away
    assert health.json()["redis"]["connected"] is False
    assert health.json()["redis"]["error"]
    assert answers == [200, 200, 429]


def test_with_redis_the_gateway_reports_it_connected(
    start_gateway: StartGateway, prefix: str
) -> None:
    gateway = start_gateway(redis_url=REDIS_URL, redis_prefix=prefix)

    assert gateway.get("/api").json()["redis"] == {"url": REDIS_URL, "connected": True}


def test_without_a_redis_url_none_is_reported(start_gateway: StartGateway) -> None:
    redis_state = start_gateway().get("/api").json()["redis"]

    assert redis_state["url"] is None
    assert redis_state["connected"] is False


async def test_redis_being_away_is_logged_once_every_few_seconds() -> None:
    configure_logging("gateway")
    url = f"redis://127.0.0.1:{free_port()}/0"

    def warnings() -> int:
        return sum(
            1
            for line in recent_logs().find(service="gateway", limit=LOGS_KEPT)
            if line["logger"] == "gateway.ratelimit"
            and line["level"] == "warning"
            and line.get("redis") == url
        )

    clock = SecondsClock()
    buckets = RedisBuckets(
        url, TokenBuckets(rate=1.0, burst=100), pause=0.0, warn_every=10.0, clock=clock
    )
    await buckets.start()
    try:
        for _ in range(5):
            await buckets.take("ada")
            clock.now += 1.0
        logged_first = warnings()
        clock.now += 10.0
        await buckets.take("ada")
    finally:
        await buckets.close()

    assert (logged_first, warnings()) == (1, 2)
