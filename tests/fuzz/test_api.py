"""Generated requests, well-formed and malformed, against every operation that inventory,
payments, orders, catalog and cart document (notifications has its own, over a mailbox it
fills): none may get a server error, and every answer, refusals included (problem details),
must be the one the document describes.

Each service runs in-process on a SQLite database of its own. Requests carry an admin's access
token, signed here the way identity signs them (EdDSA, ``typ: at+jwt``, a ``kid``), so that the
generated input gets past authentication and reaches the handlers. Orders reaches the catalog,
payments and cart through ports, and cart the catalog; they get small fakes, so no other service
is needed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from agora.auth import TokenVerifier
from agora.settings import ServiceSettings
from agora.testing import SigningKey
from cart.bootstrap import create_app as create_cart
from cart.domain import Product
from cart.settings import CartSettings
from catalog.bootstrap import create_app as create_catalog
from catalog.settings import CatalogSettings
from inventory.bootstrap import create_app as create_inventory
from inventory.settings import InventorySettings
from orders.bootstrap import create_app as create_orders
from orders.domain import Card, InvalidCard, Priced, Requested
from orders.settings import OrdersSettings
from payments.bootstrap import create_app as create_payments
from payments.settings import PaymentsSettings

KEY = SigningKey("fuzz-key-1")


def verifier(settings: ServiceSettings) -> TokenVerifier:
    return KEY.verifier()


class FakeCatalogue:
    """The catalog service as orders sees it: a few products, one no longer sold, one in dollars."""

    def __init__(self) -> None:
        products = [
            Priced("KIT-CHEF-KNIFE-20", "Chef's Knife 20 cm", 7900, "EUR", True),
            Priced("KIT-CAST-PAN-28", "Cast Iron Pan 28 cm", 4990, "EUR", True),
            Priced("COF-GRINDER-BURR", "Burr Grinder", 12900, "EUR", True),
            Priced("OLD-KETTLE", "Stovetop Kettle", 2590, "EUR", False),
            Priced("US-MUG", "Diner Mug", 900, "USD", True),
        ]
        self.products = {product.sku: product for product in products}

    async def prices(self, skus: Sequence[str]) -> dict[str, Priced]:
        return {sku: self.products[sku] for sku in skus if sku in self.products}


class FakeShelf:
    """The catalog service as cart sees it: the same products as orders' fake catalogue."""

    def __init__(self) -> None:
        self.known = {
            sku: Product(p.sku, p.name, p.price, p.currency, p.active)
            for sku, p in FakeCatalogue().products.items()
        }

    async def products(self, skus: Collection[str]) -> dict[str, Product]:
        return {sku: self.known[sku] for sku in skus if sku in self.known}


class FakeCart:
    """The cart service as orders sees it: every cart holds one knife."""

    async def lines(self) -> list[Requested]:
        return [Requested("KIT-CHEF-KNIFE-20", 1)]


class FakeCards:
    """The payments service's card tokens: any run of 12 to 19 digits is a card."""

    async def tokenize(self, card_number: str) -> Card:
        digits = card_number.replace(" ", "").replace("-", "")
        if not (digits.isascii() and digits.isdigit() and 12 <= len(digits) <= 19):
            raise InvalidCard("payments does not accept this card number")
        return Card(token=f"tok_{uuid.uuid4().hex}", brand="visa", last4=digits[-4:])


def local(data_dir: Path, name: str) -> dict[str, Any]:
    """Settings for a service whose database is a SQLite file in ``data_dir``."""
    return {
        "database_url": f"sqlite:///{data_dir / f'{name}.db'}",
        "data_dir": data_dir,
        "log_level": "warning",
    }


def inventory(data_dir: Path) -> FastAPI:
    settings = InventorySettings(**local(data_dir, "inventory"))
    return create_inventory(settings, verifier=verifier(settings))


def payments(data_dir: Path) -> FastAPI:
    settings = PaymentsSettings(**local(data_dir, "payments"))
    return create_payments(settings, verifier=verifier(settings))


def orders(data_dir: Path) -> FastAPI:
    settings = OrdersSettings(**local(data_dir, "orders"))
    return create_orders(
        settings,
        verifier=verifier(settings),
        catalogue=FakeCatalogue(),
        cards=FakeCards(),
        cart=FakeCart(),
    )


def cart(data_dir: Path) -> FastAPI:
    settings = CartSettings(**local(data_dir, "cart"))
    return create_cart(settings, verifier=verifier(settings), catalogue=FakeShelf())


def catalog(data_dir: Path) -> FastAPI:
    settings = CatalogSettings(**local(data_dir, "catalog"))
    return create_catalog(settings, verifier=verifier(settings))


# Building an app opens nothing: its database is migrated and seeded when its lifespan starts.
SERVICES: dict[str, Callable[[Path], FastAPI]] = {
    "inventory": inventory,
    "payments": payments,
    "orders": orders,
    "catalog": catalog,
    "cart": cart,
}


class Apps:
    """The services of one test module, each built on first use with a data directory of its own.

    schemathesis starts an app's lifespan (migrations, seeds, workers) with the first request of a
    test and ends it when that test ends, so the database carries over from one operation's test
    to the next: what one operation created, the next can find.
    """

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.built: dict[str, FastAPI] = {}

    def __getitem__(self, name: str) -> FastAPI:
        if name not in self.built:
            self.built[name] = SERVICES[name](self.tmp_path_factory.mktemp(name))
        return self.built[name]


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Apps:
    return Apps(tmp_path_factory)


@pytest.fixture(scope="module")
def admin() -> dict[str, str]:
    """An admin's bearer token; every service takes identity's issuer and audience."""
    # Outlives the module: an expired token would turn every answer into a 401.
    return KEY.bearer(["customer", "admin"], email="admin@example.com", exp=int(time.time()) + 3600)


# Checks on every answer: no server error, and the status, content type and body the document
# describes (refusals included: problem details, RFC 9457).
Case = schemathesis.Case[Any]
EVERY_ANSWER: list[schemathesis.CheckFunction] = [not_a_server_error]
DOCUMENTED: list[schemathesis.CheckFunction] = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
PROBLEM = "application/problem+json"
# In the catalog's and inventory's seeds, and sold by orders' fake catalogue.
SEEDED_SKUS = ["KIT-CHEF-KNIFE-20", "KIT-CAST-PAN-28", "COF-GRINDER-BURR"]

# A fixed seed, derandomized generation and no example database: every run sends the same
# requests, so a failure seen once is seen again. schemathesis sets no Hypothesis deadline.
CONFIG = {
    "seed": 20261124,
    # Half the SKUs, card numbers, categories and currencies are real ones, so that requests get
    # past "no such product", "not a card" and the like to the code behind them.
    "dictionaries": {
        "skus": {"values": [*SEEDED_SKUS, "OLD-KETTLE", "US-MUG"]},
        "cards": {"values": ["4242 4242 4242 4242", "4000 0000 0000 0002"]},
        "categories": {"values": ["kitchen", "coffee-tea"]},
        "currencies": {"values": ["EUR", "USD"]},
    },
    "parameters": {
        "path.sku": {"dictionary": "skus", "probability": 0.5},
        "query.sku": {"dictionary": "skus", "probability": 0.5},
        "body.lines[*].sku": {"dictionary": "skus", "probability": 0.5},
        "body.card_number": {"dictionary": "cards", "probability": 0.5},
        "body.category": {"dictionary": "categories", "probability": 0.5},
        "body.currency": {"dictionary": "currencies", "probability": 0.5},
    },
    "generation": {
        "mode": "all",
        "max-examples": 50,
        "deterministic": True,
        "database": "none",
    },
}


def document(name: str) -> schemathesis.BaseSchema:
    """The operations the service documents, read from an app that is never started."""
    app = SERVICES[name](Path("never-opened"))
    config = schemathesis.Config.from_dict(CONFIG)
    return schemathesis.openapi.from_dict(app.openapi(), config=config)


DOCUMENTS = {name: document(name) for name in SERVICES}


def answers_as_documented(case: Case, app: FastAPI, admin: dict[str, str]) -> None:
    """No server error; an accepted request's answer as documented; a refusal as a problem."""
    response = case.call(app=app, headers=admin)
    case.validate_response(response, checks=EVERY_ANSWER + DOCUMENTED, headers=admin)
    if response.status_code >= 400:
        problem = response.json()
        assert response.headers["content-type"] == [PROBLEM], case.as_curl_command()
        assert problem["status"] == response.status_code, case.as_curl_command()


@DOCUMENTS["inventory"].parametrize()
def test_inventory(case: Case, apps: Apps, admin: dict[str, str]) -> None:
    answers_as_documented(case, apps["inventory"], admin)


@DOCUMENTS["payments"].parametrize()
def test_payments(case: Case, apps: Apps, admin: dict[str, str]) -> None:
    answers_as_documented(case, apps["payments"], admin)


@DOCUMENTS["orders"].parametrize()
def test_orders(case: Case, apps: Apps, admin: dict[str, str]) -> None:
    answers_as_documented(case, apps["orders"], admin)


@DOCUMENTS["catalog"].parametrize()
def test_catalog(case: Case, apps: Apps, admin: dict[str, str]) -> None:
    answers_as_documented(case, apps["catalog"], admin)


@DOCUMENTS["cart"].parametrize()
def test_cart(case: Case, apps: Apps, admin: dict[str, str]) -> None:
    answers_as_documented(case, apps["cart"], admin)
