"""A login flood from one client leaves everyone else logging in and reading /me.

One client sends 20 login attempts a second, for emails that have no account, through the
gateway of a system started by ``agora up`` with the gateway's own limits, for as long as the
other users are at it (half a minute or more). They, each from an address of their own, log in
five times, six seconds apart, and read ``/api/identity/me`` ten times after each login: 120
logins and about 1,200 /me calls. At least 99 % of the logins and 99.9 % of the /me calls must
succeed.

All the traffic goes to loopback. The test plays the proxy in front of the gateway
(``AGORA_GATEWAY_TRUSTED_PROXIES=127.0.0.1``) and names each client in ``X-Forwarded-For``, as a
load balancer would: the flood from one address, each user from another (addresses from the
documentation ranges of RFC 5737, only ever written in a header, never contacted).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from shopping import ADMIN_EMAIL, ADMIN_PASSWORD

from agora_tools.harness import RunningSystem

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

# nats, identity, catalog, inventory, payments, orders, cart, notifications, shipping, the gateway
PROCESSES = 10
FLOOD_ADDRESS = "198.51.100.7"
FLOOD_PER_SECOND = 20
USERS = 24
LOGINS = 5
# A user logs in again every 6 s: ten a minute, what the gateway allows one client by default.
LOGIN_EVERY = 6.0
ME_PER_LOGIN = 10
ME_EVERY = 0.25
# However busy the machine, the users are done within this (they need about half a minute).
USERS_BOUND = 300.0
# Far above the gateway's own 5 s bound on a call to identity: a slow answer is the gateway's
# to time out (a 504 counts as a failure), not the test's.
TIMEOUT = httpx.Timeout(30.0)


@dataclass
class User:
    email: str
    password: str
    address: str
    logins: Counter[str] = field(default_factory=Counter)
    me: Counter[str] = field(default_factory=Counter)

    @property
    def client(self) -> dict[str, str]:
        return {"x-forwarded-for": self.address}


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    env = {
        **os.environ,
        "AGORA_ADMIN_EMAIL": ADMIN_EMAIL,
        "AGORA_ADMIN_PASSWORD": ADMIN_PASSWORD,
        # The test is the proxy in front of the gateway; every limit is the gateway's default.
        "AGORA_GATEWAY_TRUSTED_PROXIES": "127.0.0.1",
    }
    directory = tmp_path_factory.mktemp("login-flood") / "shop"
    with RunningSystem(directory, env=env) as running:
        # A generous bound: the machine may be busy with more than this system.
        running.wait_healthy(count=PROCESSES, timeout=600)
        yield running


def register(api: httpx.Client, number: int) -> User:
    user = User(
        email=f"regular-{uuid.uuid4().hex[:10]}@example.com",
        password=f"plum-orchard-{uuid.uuid4().hex[:8]}",
        address=f"203.0.113.{number + 1}",
    )
    answer = api.post(
        "/api/identity/users",
        json={"email": user.email, "password": user.password},
        headers=user.client,
    )
    assert answer.status_code == 201, answer.text
    return user


async def flood(api: httpx.AsyncClient, users_done: asyncio.Event) -> Counter[str]:
    """Login attempts for emails that have no account, FLOOD_PER_SECOND of them a second from
    one address, until the users are done; the answers' statuses."""
    loop = asyncio.get_running_loop()
    answers: Counter[str] = Counter()
    retry_after: list[str] = []

    async def attempt() -> None:
        body = {"email": f"nobody-{uuid.uuid4().hex}@example.com", "password": "a wild guess"}
        try:
            reply = await api.post(
                "/api/identity/token", json=body, headers={"x-forwarded-for": FLOOD_ADDRESS}
            )
        except httpx.HTTPError as error:
            answers[type(error).__name__] += 1
            return
        answers[str(reply.status_code)] += 1
        if reply.status_code == 429:
            retry_after.append(reply.headers.get("retry-after", ""))

    attempts: list[asyncio.Task[None]] = []
    next_at = loop.time()
    while not users_done.is_set():
        attempts.append(asyncio.create_task(attempt()))
        next_at += 1 / FLOOD_PER_SECOND
        await asyncio.sleep(max(0.0, next_at - loop.time()))  # pacing the flood's rate
    await asyncio.gather(*attempts)
    assert all(wait.isdigit() and int(wait) >= 1 for wait in retry_after), retry_after
    return answers


async def log_in_and_read_me(api: httpx.AsyncClient, user: User, start: float) -> None:
    """From ``start`` (loop time), LOGINS logins LOGIN_EVERY seconds apart, each followed by
    ME_PER_LOGIN reads of /me, ME_EVERY seconds apart, with the newest token the user has (after
    a failed login, the one before, as a browser keeps its session)."""
    loop = asyncio.get_running_loop()
    login_at = start
    token: str | None = None
    for _ in range(LOGINS):
        await asyncio.sleep(max(0.0, login_at - loop.time()))  # the user's own pace
        token = await log_in(api, user) or token
        login_at += LOGIN_EVERY
        if token is None:
            continue
        me_at = loop.time()
        for _ in range(ME_PER_LOGIN):
            await read_me(api, user, token)
            me_at += ME_EVERY
            await asyncio.sleep(max(0.0, me_at - loop.time()))


async def log_in(api: httpx.AsyncClient, user: User) -> str | None:
    body = {"email": user.email, "password": user.password}
    try:
        reply = await api.post("/api/identity/token", json=body, headers=user.client)
    except httpx.HTTPError as error:
        user.logins[type(error).__name__] += 1
        return None
    user.logins[str(reply.status_code)] += 1
    if reply.status_code != 200:
        return None
    token: str = reply.json()["access_token"]
    return token


async def read_me(api: httpx.AsyncClient, user: User, token: str) -> None:
    headers = {**user.client, "authorization": f"Bearer {token}"}
    try:
        reply = await api.get("/api/identity/me", headers=headers)
    except httpx.HTTPError as error:
        user.me[type(error).__name__] += 1
        return
    ok = reply.status_code == 200 and reply.json().get("email") == user.email
    user.me["200" if ok else str(reply.status_code)] += 1


async def under_a_flood(gateway_url: str, users: list[User]) -> Counter[str]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with (
        httpx.AsyncClient(base_url=gateway_url, timeout=TIMEOUT, limits=limits) as attacker,
        httpx.AsyncClient(base_url=gateway_url, timeout=TIMEOUT, limits=limits) as others,
    ):
        begin = asyncio.get_running_loop().time()
        users_done = asyncio.Event()
        flooding = asyncio.create_task(flood(attacker, users_done))
        try:
            # The users' logins spread over the interval, as people's would be; the flood has
            # begun before the first of them.
            async with asyncio.timeout(USERS_BOUND):
                await asyncio.gather(
                    *(
                        log_in_and_read_me(others, user, begin + 0.5 + n * LOGIN_EVERY / USERS)
                        for n, user in enumerate(users)
                    )
                )
        finally:
            users_done.set()
        return await flooding


def share(counts: Counter[str]) -> float:
    return counts["200"] / max(1, sum(counts.values()))


def test_a_login_flood_from_one_client_leaves_other_users_logging_in(
    system: RunningSystem,
) -> None:
    with httpx.Client(base_url=system.gateway_url, timeout=TIMEOUT) as api:
        users = [register(api, number) for number in range(USERS)]

    flooded = asyncio.run(under_a_flood(system.gateway_url, users))

    logins = sum((user.logins for user in users), Counter[str]())
    me = sum((user.me for user in users), Counter[str]())
    # The figures, for `pytest tests/system/test_login_flood.py -s`.
    print(f"\nflood: {dict(flooded)}  other users' logins: {dict(logins)}  /me: {dict(me)}")
    # The flood lasted as long as the users' 24 s of logins at least, and the gateway turned
    # almost all of it away.
    assert sum(flooded.values()) >= FLOOD_PER_SECOND * (LOGINS - 1) * LOGIN_EVERY, flooded
    assert set(flooded) <= {"401", "429"}, flooded
    assert flooded["429"] >= 0.9 * sum(flooded.values()), flooded
    # Everyone else went on logging in and reading who they are.
    assert sum(logins.values()) == USERS * LOGINS
    assert share(logins) >= 0.99, logins
    assert sum(me.values()) >= 1000, me
    assert share(me) >= 0.999, me
