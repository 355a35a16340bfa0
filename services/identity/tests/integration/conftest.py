"""identity through its HTTP API, on SQLite and on PostgreSQL (a database per test and the clock
the tests move come from agora-tools' pytest plugin)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agora_tools.pytest_plugin import Clock as Clock
from agora_tools.testing import bearer as bearer
from identity.bootstrap import create_app
from identity.settings import IdentitySettings

ADMIN_EMAIL = "root@shop.example"
ADMIN_PASSWORD = "a long admin passphrase"
PASSWORD = "correct horse battery"


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
