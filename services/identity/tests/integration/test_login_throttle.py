"""Logging in under attack and under load, through identity's HTTP API, on SQLite and PostgreSQL:
the throttle per (account, client), bounded password hashing, concurrent logins for one email."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from identity.application import PasswordHasher
from identity.bootstrap import create_app
from identity.settings import IdentitySettings

PASSWORD = "correct horse battery"
WRONG = "guess guess guess"
# identity trusts the forwarded address from loopback (the gateway); these are its clients.
GATEWAY = ("127.0.0.1", 50000)
ATTACKER = "203.0.113.7"
OWNER = "198.51.100.2"

Started = Callable[..., AbstractContextManager[TestClient]]


@pytest.fixture
def behind_gateway(settings: IdentitySettings, clock: Any) -> Started:
    """identity as the gateway calls it: from loopback, naming the client in X-Forwarded-For."""

    @contextmanager
    def started(
        *,
        peer: tuple[str, int] = GATEWAY,
        passwords: PasswordHasher | None = None,
        **overrides: Any,
    ) -> Iterator[TestClient]:
        changed = IdentitySettings(**(settings.model_dump() | overrides))
        app = create_app(changed, clock=clock, passwords=passwords)
        with TestClient(app, client=peer, raise_server_exceptions=False) as client:
            yield client

    return started


def log_in(client: TestClient, address: str, password: str = PASSWORD) -> Any:
    return client.post(
        "/token",
        json={"email": "ada@example.com", "password": password},
        headers={"X-Forwarded-For": address},
    )


def register(client: TestClient, email: str = "ada@example.com") -> Any:
    return client.post("/users", json={"email": email, "password": PASSWORD})


# --- the throttle per (account, client) ---------------------------------------------------------


def test_an_attacker_hammering_an_account_leaves_its_owner_logging_in(
    behind_gateway: Started,
) -> None:
    with behind_gateway() as client:
        assert register(client).status_code == 201

        attacks = [log_in(client, ATTACKER, WRONG).status_code for _ in range(12)]
        owner = log_in(client, OWNER)

        assert attacks == [401] * 5 + [429] * 7
        assert owner.status_code == 200, owner.text
        still_locked = log_in(client, ATTACKER)
        assert still_locked.status_code == 429, "the client that failed stays locked out"
        assert int(still_locked.headers["retry-after"]) >= 1


def test_the_admin_cannot_be_locked_out_by_someone_elses_failures(
    behind_gateway: Started, settings: IdentitySettings
) -> None:
    admin = {"email": settings.admin_email, "password": settings.admin_password.get_secret_value()}
    wrong = admin | {"password": WRONG}
    with behind_gateway() as client:
        for _ in range(10):
            client.post("/token", json=wrong, headers={"X-Forwarded-For": ATTACKER})

        reply = client.post("/token", json=admin, headers={"X-Forwarded-For": OWNER})

        assert reply.status_code == 200, reply.text


def test_a_caller_that_is_not_a_trusted_proxy_cannot_dodge_the_lock_by_naming_other_addresses(
    behind_gateway: Started,
) -> None:
    with behind_gateway(peer=(ATTACKER, 40000)) as client:
        assert register(client).status_code == 201

        statuses = [log_in(client, f"10.9.0.{n}", WRONG).status_code for n in range(6)]

        assert statuses == [401] * 5 + [429]


# --- bounded hashing ----------------------------------------------------------------------------


class HeldPasswords:
    """Plain-text "hashes" whose checks, once held, wait until the test lets them go."""

    def __init__(self) -> None:
        self.holding = False
        self.waiting = threading.Semaphore(0)
        self.release = threading.Event()

    def hash(self, password: str) -> str:
        self._wait()
        return f"plain:{password}"

    def verify(self, password_hash: str, password: str) -> bool:
        self._wait()
        return password_hash == f"plain:{password}"

    def needs_rehash(self, password_hash: str) -> bool:
        return False

    def verify_dummy(self, password: str) -> None:
        self._wait()

    def _wait(self) -> None:
        if self.holding:
            self.waiting.release()
            assert self.release.wait(timeout=60), "the test never let the check go"


def test_a_login_flood_beyond_the_hashing_bound_gets_429_at_once_while_identity_keeps_answering(
    behind_gateway: Started,
) -> None:
    passwords = HeldPasswords()
    with behind_gateway(passwords=passwords, hash_concurrency=1, hash_queue=0) as client:
        assert register(client).status_code == 201
        passwords.holding = True
        replies: list[Any] = []
        checked = threading.Thread(target=lambda: replies.append(log_in(client, OWNER)))
        checked.start()
        assert passwords.waiting.acquire(timeout=60), "the first login reached its check"

        flooded = log_in(client, ATTACKER)
        registering = register(client, "bob@example.com")
        keys = client.get("/.well-known/jwks.json")
        passwords.release.set()
        checked.join(timeout=60)

    for refused in (flooded, registering):
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["title"] == "Too many password checks at once"
        assert refused.headers["retry-after"] == "1"
    assert keys.status_code == 200, "the service kept answering while its hashing was full"
    assert [reply.status_code for reply in replies] == [200], "the login in progress got in"


# --- concurrent logins for one email ------------------------------------------------------------


def test_many_concurrent_logins_for_one_email_never_answer_500(behind_gateway: Started) -> None:
    with behind_gateway(hash_queue=64) as client:
        assert register(client).status_code == 201
        start = threading.Barrier(16)
        statuses: list[int] = []

        def logins(thread: int) -> None:
            start.wait(timeout=60)
            for round_ in range(6):
                # Mostly the right password, so that successes forget the records that other
                # logins are creating at the same moment; now and then a failure that makes one.
                password = WRONG if (thread + round_) % 5 == 0 else PASSWORD
                statuses.append(log_in(client, OWNER, password).status_code)

        threads = [threading.Thread(target=logins, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 240
        for thread in threads:
            thread.join(timeout=max(deadline - time.monotonic(), 0))

        assert len(statuses) == 16 * 6, "every login was answered"
        assert set(statuses) <= {200, 401, 429}, sorted(set(statuses))
        assert 200 in statuses
