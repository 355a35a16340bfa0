"""Crafted cursors against every paged listing of every service: random text, random bytes and
random JSON in base64, keys of the right shape with integers no 64-bit column holds, moments
without a time zone, nested objects. Each is refused with a 400 problem, or served (200); none
gets a server error (ADR 0023).

Each service runs in-process on a SQLite database of its own, as in test_api.py, but shipping, a
TypeScript service, which runs as its own process (conftest.py); requests carry an admin's token,
so that the cursor reaches the code that reads it.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agora_tools.testing import SigningKey, on_sqlite
from catalog.bootstrap import create_app as create_catalog
from catalog.settings import CatalogSettings
from identity.bootstrap import create_app as create_identity
from identity.settings import IdentitySettings
from inventory.bootstrap import create_app as create_inventory
from inventory.settings import InventorySettings
from notifications.bootstrap import create_app as create_notifications
from notifications.settings import NotificationsSettings
from orders.bootstrap import create_app as create_orders
from orders.settings import OrdersSettings
from payments.bootstrap import create_app as create_payments
from payments.settings import PaymentsSettings
from tests.fuzz.conftest import Shipping

KEY = SigningKey("fuzz-cursor-key")
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "an admin password for fuzzing"
PROBLEM = "application/problem+json"
# The longest cursor a listing reads at all, where it is not 512 characters.
LONGEST = {"identity": 64}


def identity(data_dir: Path) -> FastAPI:
    settings = IdentitySettings(
        **on_sqlite(data_dir, "identity"),
        admin_email=ADMIN_EMAIL,
        admin_password=ADMIN_PASSWORD,
        # Cheap argon2id: the same code path, a fraction of the time.
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        argon2_parallelism=1,
    )
    return create_identity(settings)


SERVICES: dict[str, Callable[[Path], FastAPI]] = {
    "catalog": lambda d: create_catalog(
        CatalogSettings(**on_sqlite(d, "catalog")), verifier=KEY.verifier()
    ),
    "orders": lambda d: create_orders(
        OrdersSettings(**on_sqlite(d, "orders")), verifier=KEY.verifier()
    ),
    "notifications": lambda d: create_notifications(
        NotificationsSettings(**on_sqlite(d, "notifications")), verifier=KEY.verifier()
    ),
    "payments": lambda d: create_payments(
        PaymentsSettings(**on_sqlite(d, "payments")), verifier=KEY.verifier()
    ),
    "inventory": lambda d: create_inventory(
        InventorySettings(**on_sqlite(d, "inventory")), verifier=KEY.verifier()
    ),
    "identity": identity,
}

# Every listing that pages with a cursor: the service, the path, and what else it is asked.
LISTINGS = [
    *[("catalog", "/products", {"sort": sort}) for sort in ("name", "-name", "price", "-price")],
    ("orders", "/orders", {}),
    ("notifications", "/notifications", {}),
    ("notifications", "/notifications/all", {}),
    ("payments", "/payments", {}),
    ("payments", "/payments/ledger/movements", {}),
    ("inventory", "/inventory/stock", {}),
    ("inventory", "/inventory/reservations", {}),
    ("identity", "/users", {}),
]


class Clients:
    """A started app per service, built on first use, each with an admin's headers."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.started: dict[str, tuple[TestClient, dict[str, str]]] = {}
        self._exits: list[Callable[[], None]] = []

    def __getitem__(self, name: str) -> tuple[TestClient, dict[str, str]]:
        if name not in self.started:
            client = TestClient(SERVICES[name](self.tmp_path_factory.mktemp(name)))
            client.__enter__()
            self._exits.append(lambda: client.__exit__(None, None, None))
            self.started[name] = (client, self._admin(name, client))
        return self.started[name]

    @staticmethod
    def _admin(name: str, client: TestClient) -> dict[str, str]:
        if name == "identity":
            answer = client.post("/token", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
            return {"Authorization": f"Bearer {answer.json()['access_token']}"}
        # Outlives the module: an expired token would turn every answer into a 401.
        return KEY.bearer(["customer", "admin"], email=ADMIN_EMAIL, exp=int(time.time()) + 3600)

    def close(self) -> None:
        for close in reversed(self._exits):
            close()


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clients]:
    started = Clients(tmp_path_factory)
    yield started
    started.close()


def token(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


moments = st.datetimes(timezones=st.none() | st.timezones()).map(lambda m: m.isoformat())
huge = st.integers(min_value=2**63) | st.integers(max_value=-(2**63) - 1)
words = st.sampled_from(["name", "-name", "price", "-price", "stock", "reservations"])
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | huge
    | st.floats()
    | st.text(max_size=40)
    | moments
    | words
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


def cursors(sort: str | None) -> st.SearchStrategy[str]:
    """Tokens for a listing: mostly keys of the shapes the listings page by (a sort, a key and a
    sku; a moment and an id; an id; a listing and a key), with any value in each place, so that
    most get past the shape check to the field checks; and any JSON, bytes or text besides."""
    first = st.sampled_from([sort]) if sort else words
    key = st.one_of(huge, st.integers(), scalars)
    shaped = st.one_of(
        st.tuples(first, key, st.one_of(st.just("KIT-CHEF-KNIFE-20"), scalars)),
        st.tuples(st.one_of(moments, scalars), key),
        st.tuples(key),
        st.tuples(words, key),
    )
    return st.one_of(
        shaped.map(lambda fields: token(list(fields))),
        json_values.map(token),
        st.binary(max_size=300).map(lambda raw: base64.urlsafe_b64encode(raw).decode()),
        st.text(max_size=300),
    )


# A hundred crafted cursors per listing, the same on every run.
CRAFTED = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize(("service", "path", "params"), LISTINGS)
@CRAFTED
@given(data=st.data())
def test_a_crafted_cursor_is_refused_or_served_never_a_server_error(
    clients: Clients, service: str, path: str, params: dict[str, str], data: st.DataObject
) -> None:
    client, admin = clients[service]
    cursor = data.draw(cursors(params.get("sort")), label="cursor")

    answer = client.get(path, params={**params, "cursor": cursor}, headers=admin)

    # 422: longer than the listing takes at all, refused before it is read as a cursor.
    assert answer.status_code in (200, 400, 422), (answer.status_code, cursor, answer.text)
    if answer.status_code != 200:
        assert answer.headers["content-type"] == PROBLEM
        assert answer.json()["status"] == answer.status_code


@pytest.mark.parametrize(("service", "path", "params"), LISTINGS)
@pytest.mark.parametrize("key", [2**63, -(2**63) - 1, 10**40])
def test_a_cursor_holding_an_integer_beyond_64_bits_is_a_400(
    clients: Clients, service: str, path: str, params: dict[str, str], key: int
) -> None:
    client, admin = clients[service]
    shapes = [
        [params.get("sort", "price"), key, "KIT-CHEF-KNIFE-20"],
        ["2026-01-01T00:00:00+00:00", key],
        [key],
        ["stock", key],
    ]
    # Identity's cursors are short (an id): longer ones are refused as too long (422) unread.
    made_up = [shape for shape in shapes if len(token(shape)) <= LONGEST.get(service, 512)]

    answers = [
        client.get(path, params={**params, "cursor": token(value)}, headers=admin)
        for value in made_up
    ]

    assert [answer.status_code for answer in answers] == [400] * len(made_up)


# --- shipping: TypeScript, run as its own process (conftest.py) --------------------------------
# Its cursor is a moment and a shipment's id: [created_at, id].


@pytest.fixture(scope="module")
def shipping_client(shipping: Shipping) -> Iterator[httpx.Client]:
    """An admin's client of shipping: one connection for every example."""
    with httpx.Client(base_url=shipping.url, headers=shipping.admin) as client:
        yield client


@CRAFTED
@given(data=st.data())
def test_a_crafted_shipping_cursor_is_refused_or_served_never_a_server_error(
    shipping_client: httpx.Client, data: st.DataObject
) -> None:
    cursor = data.draw(cursors(None), label="cursor")

    answer = shipping_client.get("/shipments", params={"cursor": cursor})

    assert answer.status_code in (200, 400), (answer.status_code, cursor, answer.text)
    if answer.status_code != 200:
        assert answer.headers["content-type"] == PROBLEM
        assert answer.json()["status"] == answer.status_code


@pytest.mark.parametrize(
    "value",
    [
        ["2026-01-01T00:00:00+00:00", 2**63],
        ["2026-01-01T00:00:00", "0a0a0a0a-0000-4000-8000-00000000000a"],
        ["2026-02-30T00:00:00Z", "0a0a0a0a-0000-4000-8000-00000000000a"],
        ["+275760-09-13T00:00:00Z", "0a0a0a0a-0000-4000-8000-00000000000a"],
        ["2026-01-01T00:00:00Z", "not-an-id"],
        ["2026-01-01T00:00:00Z"],
        {"created_at": "2026-01-01T00:00:00Z"},
    ],
)
def test_a_shipping_cursor_it_did_not_hand_out_is_a_400_problem(
    shipping: Shipping, value: object
) -> None:
    with httpx.Client(base_url=shipping.url, headers=shipping.admin) as client:
        answers = [
            client.get("/shipments", params={"cursor": cursor})
            for cursor in (token(value), "not a cursor", "bm90LWEtY3Vyc29y")
        ]

    assert [a.status_code for a in answers] == [400] * 3, [a.text for a in answers]
    assert {a.headers["content-type"] for a in answers} == {PROBLEM}


def test_the_cursor_shipping_hands_out_brings_the_next_page(shipping: Shipping) -> None:
    with httpx.Client(base_url=shipping.url, headers=shipping.admin) as client:
        first = client.get("/shipments", params={"limit": 1}).json()
        second = client.get("/shipments", params={"limit": 1, "cursor": first["next_cursor"]})

    assert second.status_code == 200, second.text
    assert second.json()["items"][0]["id"] != first["items"][0]["id"]
