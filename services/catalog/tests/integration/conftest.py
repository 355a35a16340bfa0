"""The catalog app on SQLite and on PostgreSQL (a database per test or per module, and the app
fixtures, from agora-tools' pytest plugin), and access tokens signed by a test key.

Tokens are signed here the way identity signs them (EdDSA, ``typ: at+jwt``, a ``kid``); the app
gets a ``TokenVerifier`` whose key source answers with this test key's JWKS.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from agora_tools.pytest_plugin import Service
from agora_tools.testing import SigningKey
from catalog.bootstrap import MIGRATIONS, create_app
from catalog.settings import CatalogSettings

KEY = SigningKey()

SERVICE = Service.standard(CatalogSettings, create_app, KEY, migrations=MIGRATIONS)
app_for = SERVICE.app_for


# The plugin's fixtures: ``client`` a freshly seeded catalog of the test's own, ``shared`` one
# seeded catalog per module.
service = SERVICE.fixture()


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
