"""identity through its HTTP API, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agora_tools.testing import STORES, database
from identity.bootstrap import create_app
from identity.settings import IdentitySettings

ADMIN_EMAIL = "root@shop.example"
ADMIN_PASSWORD = "a long admin passphrase"
PASSWORD = "correct horse battery"


class Clock:
    """identity's clock in these tests: real time, until a test moves it."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


@pytest.fixture(params=STORES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, "identity", tmp_path) as url:
        yield url


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> IdentitySettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": data_dir,
        "profile": "embedded",
        "service_urls": {},
        "jwt_issuer": "agora-identity",
        "jwt_audience": "agora",
        "admin_email": ADMIN_EMAIL,
        "admin_password": ADMIN_PASSWORD,
        "log_level": "warning",
        # Cheap argon2id: the same code path, a fraction of the time.
        "argon2_time_cost": 1,
        "argon2_memory_kib": 1024,
        "argon2_parallelism": 1,
    }
    return IdentitySettings(**(values | overrides))


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> IdentitySettings:
    return make_settings(database_url, tmp_path / "data")


@pytest.fixture
def clock() -> Clock:
    return Clock()


class Api:
    """A running identity app, spoken to as a client would."""

    def __init__(self, client: TestClient, settings: IdentitySettings, clock: Clock) -> None:
        self.client = client
        self.settings = settings
        self.clock = clock

    def register(self, email: str, password: str = PASSWORD) -> dict[str, Any]:
        reply = self.client.post("/users", json={"email": email, "password": password})
        assert reply.status_code == 201, reply.text
        body: dict[str, Any] = reply.json()
        return body

    def log_in(self, email: str, password: str = PASSWORD) -> str:
        reply = self.client.post("/token", json={"email": email, "password": password})
        assert reply.status_code == 200, reply.text
        token: str = reply.json()["access_token"]
        return token

    def admin_token(self) -> str:
        return self.log_in(ADMIN_EMAIL, ADMIN_PASSWORD)

    def me(self, token: str) -> Any:
        return self.client.get("/me", headers=bearer(token))

    def key_ids(self) -> list[str]:
        return [key["kid"] for key in self.client.get("/.well-known/jwks.json").json()["keys"]]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


Start = Callable[..., AbstractContextManager[Api]]


@pytest.fixture
def start(settings: IdentitySettings, clock: Clock) -> Start:
    """Start identity (again) on the test's database; keyword arguments change its settings."""

    @contextmanager
    def started(**overrides: Any) -> Iterator[Api]:
        changed = IdentitySettings(**(settings.model_dump() | overrides))
        with TestClient(create_app(changed, clock=clock)) as test_client:
            yield Api(test_client, changed, clock)

    return started


@pytest.fixture
def api(start: Start) -> Iterator[Api]:
    with start() as running:
        yield running
