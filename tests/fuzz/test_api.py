"""Generated requests, well-formed and malformed, against every operation of every service,
judged by every check schemathesis has (``schemathesis run --checks all``): no server error; every
answer, refusals included (RFC 9457 problem details), the one the document describes; well-formed
requests accepted and malformed ones refused; a 405 naming the methods the document names; auth
never ignored; what one request made, the next finds.

schemathesis runs here as its command line does, every phase (examples, coverage, fuzzing,
stateful), configured by ``schemathesis.toml`` beside this file: that file also names, per
operation, the refusals a well-formed request may meet by a rule no schema can state (a duplicate
email, a cursor the service never handed out, an unknown sku).

Each Python service runs in-process on a SQLite database of its own. Requests carry an admin's
access token, signed here the way identity signs them (EdDSA, ``typ: at+jwt``, a ``kid``), so
that the generated input gets past authentication and reaches the handlers; identity signs its
own, so its admin logs in first. Orders reaches the catalog, payments and cart through ports, and
cart the catalog; they get small fakes, so no other service is needed.

Shipping, TypeScript, runs as the process ``agora up`` runs (conftest.py), its shipments made from
confirmations on a broker of its own, for two shoppers: besides an admin's run, one shopper's
token is fuzzed over the other's shipment and order ids, and no answer may tell what was not asked.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis.engine import events, from_schema
from schemathesis.python.asgi import shutdown_lifespans

from agora.auth import TokenVerifier
from agora.settings import ServiceSettings
from agora_tools.testing import SigningKey, on_sqlite
from cart.bootstrap import create_app as create_cart
from cart.domain import Product
from cart.settings import CartSettings
from catalog.bootstrap import create_app as create_catalog
from catalog.settings import CatalogSettings
from identity.bootstrap import create_app as create_identity
from identity.settings import IdentitySettings
from inventory.bootstrap import create_app as create_inventory
from inventory.settings import InventorySettings
from notifications.bootstrap import create_app as create_notifications
from notifications.settings import NotificationsSettings
from orders.bootstrap import create_app as create_orders
from orders.domain import Card, InvalidCard, Priced, Requested
from orders.settings import OrdersSettings
from payments.bootstrap import create_app as create_payments
from payments.settings import PaymentsSettings
from tests.fuzz.conftest import Shipping

KEY = SigningKey("fuzz-key-1")
CONFIG = Path(__file__).with_name("schemathesis.toml")
PROBLEM = "application/problem+json"


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


def inventory(data_dir: Path) -> FastAPI:
    settings = InventorySettings(**on_sqlite(data_dir, "inventory"))
    return create_inventory(settings, verifier=verifier(settings))


def payments(data_dir: Path) -> FastAPI:
    settings = PaymentsSettings(**on_sqlite(data_dir, "payments"))
    return create_payments(settings, verifier=verifier(settings))


def orders(data_dir: Path) -> FastAPI:
    # No order ends here (no broker answers its checkout): its status stream stops at the bound.
    settings = OrdersSettings(**on_sqlite(data_dir, "orders"), events_max_seconds=5.0)
    return create_orders(
        settings,
        verifier=verifier(settings),
        catalog=FakeCatalogue(),
        payments=FakeCards(),
        cart=FakeCart(),
    )


def cart(data_dir: Path) -> FastAPI:
    settings = CartSettings(**on_sqlite(data_dir, "cart"))
    return create_cart(settings, verifier=verifier(settings), catalog=FakeShelf())


def catalog(data_dir: Path) -> FastAPI:
    settings = CatalogSettings(**on_sqlite(data_dir, "catalog"))
    return create_catalog(settings, verifier=verifier(settings))


def identity(data_dir: Path) -> FastAPI:
    # The cheapest argon2id: the fuzz registers and logs in hundreds of times.
    settings = IdentitySettings(
        **on_sqlite(data_dir, "identity"),
        argon2_time_cost=1,
        argon2_memory_kib=8,
        argon2_parallelism=1,
    )
    return create_identity(settings)


def notifications(data_dir: Path) -> FastAPI:
    settings = NotificationsSettings(**on_sqlite(data_dir, "notifications"))
    return create_notifications(settings, verifier=verifier(settings))


# Building an app opens nothing: its database is migrated and seeded when its lifespan starts.
SERVICES: dict[str, Callable[[Path], FastAPI]] = {
    "identity": identity,
    "catalog": catalog,
    "cart": cart,
    "inventory": inventory,
    "orders": orders,
    "payments": payments,
    "notifications": notifications,
}


@pytest.fixture(scope="module")
def admin() -> dict[str, str]:
    """An admin's bearer token; every service but identity takes identity's issuer and audience."""
    # Outlives the module: an expired token would turn every answer into a 401.
    return KEY.bearer(["customer", "admin"], email="admin@example.com", exp=int(time.time()) + 3600)


def identity_admin(app: FastAPI) -> dict[str, str]:
    """The token identity issues to the admin account it makes at its first start."""
    settings = IdentitySettings()
    credentials = {
        "email": settings.admin_email,
        "password": settings.admin_password.get_secret_value(),
    }
    with TestClient(app) as client:
        answer = client.post("/token", json=credentials)
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


Case = schemathesis.Case[Any]


@schemathesis.check
def refusals_are_problem_details(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: Case
) -> bool | None:
    """Every refusal is an RFC 9457 problem whose status is the answer's."""
    if response.status_code < 400:
        return None
    assert response.headers.get("content-type") == [PROBLEM], "a refusal is not problem+json"
    assert response.json()["status"] == response.status_code, "the problem names another status"
    return None


def failures(
    schema: schemathesis.BaseSchema,
    answers: list[tuple[str, schemathesis.Response]] | None = None,
) -> list[str]:
    """Run every phase over the document, as the command line does; say what failed. Every
    request (its method and URL) and its answer go into ``answers`` when given."""
    found: list[str] = []
    for event in from_schema(schema).execute():
        if isinstance(event, events.FatalError):
            raise event.exception
        if isinstance(event, events.NonFatalError):
            found.append(f"{event.label}: {event.info.format()}")
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            if answers is not None:
                answers.extend(
                    (f"{i.request.method} {i.request.uri}", i.response)
                    for i in recorder.interactions.values()
                    if i.response is not None
                )
            for case_id, checks in recorder.checks.items():
                interaction = recorder.interactions.get(case_id)
                answer = interaction.response if interaction is not None else None
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        found.append(
                            f"{failure.operation}: {failure.title}\n{failure.message}\n"
                            f"{check.failure_info.code_sample}\n"
                            + (f"-> {answer.status_code} {answer.text[:400]}" if answer else "")
                        )
    return found


@pytest.mark.parametrize("name", SERVICES)
def test_every_generated_request_gets_the_answer_the_document_describes(
    name: str, tmp_path: Path, admin: dict[str, str]
) -> None:
    app = SERVICES[name](tmp_path)
    config = schemathesis.Config.from_path(CONFIG)
    config.projects.override.update(headers=identity_admin(app) if name == "identity" else admin)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    try:
        found = failures(schema)
    finally:
        shutdown_lifespans()

    assert not found, f"{len(found)} failures:\n\n" + "\n\n".join(found)


# --- the documents state the services' rules ---------------------------------------------------
# Requests on which a document and its service disagreed: each is now judged alike by both.


class Schema:
    """A JSON Schema from a document (its components beside it), judging values."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.validator = jsonschema_rs.validator_for(schema)

    def admits(self, value: Any) -> bool:
        return bool(self.validator.is_valid(value))


def documented(app: FastAPI, method: str, path: str, where: str = "body") -> Schema:
    """What an app's document says of the JSON body (``where="body"``) or of one parameter."""
    document = app.openapi()
    operation = document["paths"][path][method]
    if where == "body":
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
    else:
        [parameter] = [p for p in operation["parameters"] if p["name"] == where]
        schema = parameter["schema"]
    return Schema({**schema, "components": document["components"]})


NEW_PRODUCT = {
    "sku": "KIT-SPATULA",
    "name": "Spatula",
    "description": "Flexible steel.",
    "price": 900,
    "currency": "EUR",
    "category": "kitchen",
}
ADDRESS = {
    "shipping_address": {
        "name": "Ada Lovelace",
        "line1": "12 St James's Square",
        "city": "London",
        "postal_code": "SW1Y 4JH",
        "country": "GB",
    }
}


def test_a_405_names_every_method_the_path_serves(tmp_path: Path) -> None:
    with TestClient(catalog(tmp_path)) as client:
        products = client.options("/products")
        product = client.options("/products/KIT-CHEF-KNIFE-20")

    assert (products.status_code, products.headers["allow"]) == (405, "GET, POST")
    assert (product.status_code, product.headers["allow"]) == (405, "GET, PATCH")


@pytest.mark.parametrize(
    ("method", "route", "path", "refused", "taken", "status"),
    [
        # The currencies the catalog prices in are named in its document.
        (
            "post",
            "/products",
            "/products",
            {**NEW_PRODUCT, "currency": "AAA"},
            {**NEW_PRODUCT, "currency": "JPY"},
            201,
        ),
        # A product's fields but the image cannot be changed to null.
        (
            "patch",
            "/products/{sku}",
            "/products/KIT-CHEF-KNIFE-20",
            {"category": None},
            {"image_url": None},
            200,
        ),
    ],
    ids=["currencies", "null-but-the-image"],
)
def test_the_catalog_document_refuses_what_the_catalog_refuses_and_admits_what_it_takes(
    tmp_path: Path,
    admin: dict[str, str],
    method: str,
    route: str,
    path: str,
    refused: dict[str, Any],
    taken: dict[str, Any],
    status: int,
) -> None:
    app = catalog(tmp_path)
    body = documented(app, method, route)
    with TestClient(app, headers=admin) as client:
        refusal = client.request(method.upper(), path, json=refused)
        answer = client.request(method.upper(), path, json=taken)

    assert not body.admits(refused)
    assert refusal.status_code == 422
    assert body.admits(taken)
    assert answer.status_code == status
    assert {name: answer.json()[name] for name in taken} == taken


def test_an_empty_query_parameter_is_documented_as_one_not_given(tmp_path: Path) -> None:
    app = catalog(tmp_path)
    with TestClient(app) as client:
        listed = client.get("/products", params={"sort": "", "limit": "", "cursor": ""})

    for name in ("sort", "limit", "cursor"):
        assert documented(app, "get", "/products", name).admits(""), name
    assert listed.status_code == 200


def test_registration_documents_the_password_lengths_identity_takes(tmp_path: Path) -> None:
    app = identity(tmp_path)
    register = documented(app, "post", "/users")
    short = {"email": "ada@example.com", "password": "nine-char"}
    long = {"email": "ada@example.com", "password": "correct horse battery " * 6}
    with TestClient(app) as client:
        answers = [client.post("/users", json=body).status_code for body in (short, long)]

    assert not register.admits(short)
    assert not register.admits(long)
    assert answers == [422, 422]
    assert register.admits({"email": "ada@example.com", "password": "ten-chars!"})


def test_a_quantity_written_as_a_number_with_no_fraction_is_taken(
    tmp_path: Path, admin: dict[str, str]
) -> None:
    app = cart(tmp_path)
    with TestClient(app, headers=admin) as client:
        answer = client.put("/cart/items/KIT-CHEF-KNIFE-20", json={"quantity": 2.0})
        fraction = client.put("/cart/items/KIT-CHEF-KNIFE-20", json={"quantity": 2.5})

    # To JSON Schema, 2.0 is an integer; 2.5 is not.
    assert documented(app, "put", "/cart/items/{sku}").admits({"quantity": 2.0})
    assert answer.status_code == 200
    assert answer.json()["items"][0]["quantity"] == 2
    assert fraction.status_code == 422


def test_a_stock_adjustment_of_zero_is_outside_the_inventory_document(
    tmp_path: Path, admin: dict[str, str]
) -> None:
    app = inventory(tmp_path)
    zero = {"delta": 0, "reason": "stock count"}
    with TestClient(app, headers=admin) as client:
        answer = client.post("/inventory/stock/KIT-CHEF-KNIFE-20/adjustments", json=zero)

    assert not documented(app, "post", "/inventory/stock/{sku}/adjustments").admits(zero)
    assert answer.status_code == 422


@pytest.mark.parametrize("number", ["", "4242 4242 424x", "4242", "4" * 20])
def test_a_card_number_that_is_not_12_to_19_digits_is_outside_both_documents(
    number: str, tmp_path: Path, admin: dict[str, str]
) -> None:
    app = payments(tmp_path)
    with TestClient(app, headers=admin) as client:
        answer = client.post("/payments/cards", json={"card_number": number})

    assert not documented(app, "post", "/payments/cards").admits({"card_number": number})
    order = documented(orders(tmp_path), "post", "/orders")
    assert order.admits({"card_number": "4242 4242 4242 4242", **ADDRESS})
    assert not order.admits({"card_number": number, **ADDRESS})
    assert answer.status_code == 422


def test_an_idempotency_key_orders_refuses_is_outside_its_document(
    tmp_path: Path, admin: dict[str, str]
) -> None:
    app = orders(tmp_path)
    order = {"card_number": "4242 4242 4242 4242", **ADDRESS}
    with TestClient(app, headers=admin) as client:
        answer = client.post("/orders", json=order, headers={"Idempotency-Key": "key\x7f"})

    assert not documented(app, "post", "/orders", "Idempotency-Key").admits("key\x7f")
    assert documented(app, "post", "/orders", "Idempotency-Key").admits("order 7 über")
    assert answer.status_code == 400


def test_the_order_status_stream_is_documented_event_by_event(tmp_path: Path) -> None:
    document = orders(tmp_path).openapi()
    answer = document["paths"]["/orders/{order_id}/events"]["get"]["responses"]["200"]
    event = answer["content"]["text/event-stream"]["schema"]

    # An EventSource's event (its name, id and data), the data being the order in JSON.
    assert Schema({**event, "components": document["components"]}).admits(
        {"event": "status", "id": "1", "data": "{}"}
    )
    assert event["properties"]["data"]["contentMediaType"] == "application/json"
    assert event["properties"]["data"]["contentSchema"] == {"$ref": "#/components/schemas/OrderOut"}


# --- shipping: TypeScript, run as its own process (conftest.py) --------------------------------


def shipping_run(
    shipping: Shipping, headers: dict[str, str], document: dict[str, Any]
) -> tuple[list[str], list[tuple[str, schemathesis.Response]]]:
    """Every phase over shipping's document, with ``headers``: what failed, and every answer
    (the request's method and URL, and the response)."""
    config = schemathesis.Config.from_path(CONFIG)
    config.projects.override.update(base_url=shipping.url, headers=headers)
    schema = schemathesis.openapi.from_dict(document, config=config)
    answers: list[tuple[str, schemathesis.Response]] = []
    found = failures(schema, answers)
    return found, answers


def shipping_document(shipping: Shipping) -> dict[str, Any]:
    answer = httpx.get(f"{shipping.url}/openapi.json")
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    return document


def test_every_request_generated_for_shipping_gets_the_answer_its_document_describes(
    shipping: Shipping,
) -> None:
    found, answers = shipping_run(shipping, shipping.admin, shipping_document(shipping))

    assert not found, f"{len(found)} failures:\n\n" + "\n\n".join(found)
    listed = [a for r, a in answers if r.startswith(f"GET {shipping.url}/shipments?")]
    assert any(answer.status_code == 200 and answer.json()["items"] for answer in listed)


def test_one_shopper_never_reads_anothers_shipment(shipping: Shipping) -> None:
    [adas, *_], [bobs] = shipping.shipments["ada"], shipping.shipments["bob"]
    with httpx.Client(base_url=shipping.url) as client:
        as_bob = client.get(f"/shipments/{adas['id']}", headers=shipping.bob)
        bobs_listing = client.get("/shipments", headers=shipping.bob)
        one_order = client.get(
            "/shipments", params={"order_id": adas["order_id"]}, headers=shipping.bob
        )
        as_ada = client.get(f"/shipments/{adas['id']}", headers=shipping.ada)

    assert (as_bob.status_code, as_bob.headers["content-type"]) == (404, PROBLEM)
    assert as_bob.json()["status"] == 404
    assert [s["id"] for s in bobs_listing.json()["items"]] == [bobs["id"]]
    assert one_order.json() == {"items": [], "next_cursor": None}
    assert as_ada.json() == adas


def test_fuzzed_with_one_shoppers_token_no_answer_holds_anothers_shipment(
    shipping: Shipping,
) -> None:
    # The generated requests name Ada's shipments and orders besides made-up ones: the document
    # given to schemathesis holds them as examples, so that every phase asks for them.
    adas = shipping.shipments["ada"]
    document = shipping_document(shipping)
    examples = {
        "id": [s["id"] for s in adas] + [shipping.shipments["bob"][0]["id"]],
        "order_id": [s["order_id"] for s in adas],
    }
    for operation in document["paths"].values():
        for parameter in operation["get"]["parameters"]:
            if parameter["name"] in examples:
                parameter["examples"] = {
                    f"e{i}": {"value": value} for i, value in enumerate(examples[parameter["name"]])
                }

    found, answers = shipping_run(shipping, shipping.bob, document)

    secrets = {s["id"] for s in adas} | {s["tracking_number"] for s in adas}
    # (A refusal names the path it was asked: an id sent is not an id told.)
    leaks = [
        f"{request} -> {answer.status_code} {answer.text[:400]}"
        for request, answer in answers
        if any(s in answer.text and s not in request for s in secrets)
    ]
    asked = [request for request, _ in answers if any(s["id"] in request for s in adas)]
    assert not found, f"{len(found)} failures:\n\n" + "\n\n".join(found)
    assert not leaks, leaks
    assert asked, "no generated request named Ada's shipment"
