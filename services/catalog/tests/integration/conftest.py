"""The catalog app on SQLite and on PostgreSQL (a database per test or per module, from agora-tools'
pytest plugin), and access tokens signed by a test key.

Tokens are signed here the way identity signs them (EdDSA, ``typ: at+jwt``, a ``kid``); the app
gets a ``TokenVerifier`` whose key source answers with this test key's JWKS.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agora_tools import testing
from agora_tools.testing import SigningKey
from catalog.bootstrap import create_app
from catalog.settings import CatalogSettings

bearer = testing.bearer  # the Authorization header carrying a token
KEY = SigningKey()


sign = KEY.sign


@pytest.fixture
def admin() -> dict[str, str]:
    return bearer(sign(["customer", "admin"]))


@pytest.fixture
def customer() -> dict[str, str]:
    return bearer(sign(["customer"]))


def settings_for(url: str, data_dir: Path) -> CatalogSettings:
    return CatalogSettings(database_url=url, data_dir=data_dir, log_level="warning")


def app_for(settings: CatalogSettings) -> Any:
    verifier = KEY.verifier()
    return create_app(settings, verifier=verifier)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> CatalogSettings:
    return settings_for(database_url, tmp_path)


@pytest.fixture
def client(settings: CatalogSettings) -> Iterator[TestClient]:
    """A freshly seeded catalog of the test's own, for tests that change it."""
    with TestClient(app_for(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def shared(module_database_url: str, module_data_dir: Path) -> Iterator[TestClient]:
    """A seeded catalog shared by the tests of one module, which must leave it as they found it."""
    app = app_for(settings_for(module_database_url, module_data_dir))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


PROBLEM = "application/problem+json"
Headers = dict[str, str]


def a_product(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sku": "KIT-WOK-32",
        "name": "Carbon Steel Wok 32 cm",
        "description": "Hand-hammered wok with a wooden handle, seasoned for stir-frying.",
        "price": 5490,
        "currency": "EUR",
        "category": "kitchen",
        "image_url": "https://cdn.example.com/products/KIT-WOK-32.jpg",
    }
    body.update(overrides)
    return body


def listed_skus(client: TestClient, **params: Any) -> set[str]:
    items = client.get("/products", params={"limit": 100, **params}).json()["items"]
    return {item["sku"] for item in items}
