"""The shop through its gateway, as shoppers and an admin use it: what the system tests share.

Imported by name (`pythonpath` in the pytest settings puts tests/system on the path). A module
that names it in ``pytest_plugins`` has the fixture ``shop``: the shop of the module's running
``system`` (each module starts its own, with the settings and scale its journeys need). The
modules import it before pytest loads it as their plugin, so pytest leaves its asserts as they
are written (PYTEST_DONT_REWRITE), as it did when the modules only imported it.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from agora_tools.harness import ADDRESS, RunningSystem, shop_settings

# The shop's admin and the approved card, as every shop the harness starts has them; the browser
# tests import them from here.
from agora_tools.harness import ADMIN_EMAIL as ADMIN_EMAIL
from agora_tools.harness import ADMIN_PASSWORD as ADMIN_PASSWORD
from agora_tools.harness import APPROVED as APPROVED

# The simulated processor's test cards.
DECLINED = "4000 0000 0000 0002"
INSUFFICIENT_FUNDS = "4000 0000 0000 9995"
PROCESSOR_ERROR = "4000 0000 0000 0119"
PROCESSOR_TIMEOUT = "4000 0000 0000 0259"

TERMINAL = {"CONFIRMED", "CANCELLED"}
# The last step of a shipment's journey (label_created -> dispatched -> delivered).
DELIVERED = "delivered"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def admin_env(**extra: str) -> dict[str, str]:
    """Settings every system test shares: its own admin, and no rate limits to speak of (the
    tests send a whole shop's traffic, logging in and registering every shopper, from one
    address; test_login_flood.py runs with the gateway's own limits)."""
    return shop_settings(ADMIN_EMAIL, ADMIN_PASSWORD, **extra)


def log_in(api: httpx.Client, email: str, password: str) -> dict[str, str]:
    answer = api.post("/api/identity/token", json={"email": email, "password": password})
    assert answer.status_code == 200, answer.text
    return {"authorization": f"Bearer {answer.json()['access_token']}"}


def listed(
    api: httpx.Client, path: str, headers: dict[str, str], **params: str
) -> list[dict[str, Any]]:
    """The items of the first page of a listing, which must answer 200."""
    answer = api.get(path, params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


@dataclass
class Shopper:
    """One logged-in user of the shop."""

    api: httpx.Client
    headers: dict[str, str]
    email: str

    def place(
        self,
        lines: list[dict[str, Any]],
        card: str = APPROVED,
        *,
        key: str | None = None,
        **extra: Any,
    ) -> httpx.Response:
        body = {"lines": lines, "shipping_address": ADDRESS, "card_number": card, **extra}
        headers = {**self.headers, "idempotency-key": key or uuid.uuid4().hex}
        return self.api.post("/api/orders", json=body, headers=headers)

    def place_from_cart(self, card: str = APPROVED, *, key: str | None = None) -> httpx.Response:
        body = {"shipping_address": ADDRESS, "card_number": card}
        headers = {**self.headers, "idempotency-key": key or uuid.uuid4().hex}
        return self.api.post("/api/orders", json=body, headers=headers)

    def order(self, order_id: str) -> httpx.Response:
        return self.api.get(f"/api/orders/{order_id}", headers=self.headers)

    def cart(self) -> dict[str, Any]:
        answer = self.api.get("/api/cart", headers=self.headers)
        assert answer.status_code == 200, answer.text
        cart: dict[str, Any] = answer.json()
        return cart

    def put_in_cart(self, sku: str, quantity: int) -> httpx.Response:
        return self.api.put(
            f"/api/cart/items/{sku}", json={"quantity": quantity}, headers=self.headers
        )

    def messages(self) -> list[dict[str, Any]]:
        return listed(self.api, "/api/notifications", self.headers)

    def wait_for_messages(
        self, count: int, timeout: float = 30.0, **about: Any
    ) -> list[dict[str, Any]]:
        """The mailbox's messages matching ``about`` (e.g. ``kind=``), once there are ``count``
        of them or ``timeout`` has passed."""
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.messages() if all(m.get(k) == v for k, v in about.items())]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def cancel(self, order_id: str) -> httpx.Response:
        return self.api.post(f"/api/orders/{order_id}/cancel", headers=self.headers)

    def payments(self, order_id: str) -> list[dict[str, Any]]:
        return listed(self.api, "/api/payments", self.headers, order_id=order_id)

    def shipments(self, order_id: str) -> list[dict[str, Any]]:
        """The shipments of one order this shopper may see (``GET /api/shipments``)."""
        return listed(self.api, "/api/shipments", self.headers, order_id=order_id)

    def shipment(self, shipment_id: str) -> httpx.Response:
        return self.api.get(f"/api/shipments/{shipment_id}", headers=self.headers)

    def wait_until_delivered(self, order_id: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        """The order's shipments, once one of them is delivered or ``timeout`` has passed."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.shipments(order_id)
            if any(s["status"] == DELIVERED for s in found) or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def wait_until_terminal(self, order_id: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            answer = self.order(order_id)
            assert answer.status_code == 200, answer.text
            order: dict[str, Any] = answer.json()
            if order["status"] in TERMINAL or time.monotonic() > deadline:
                return order
            time.sleep(0.05)


@dataclass
class Shop:
    """The shop behind a running system's gateway, with its admin logged in."""

    system: RunningSystem
    api: httpx.Client
    admin: dict[str, str] = field(default_factory=dict)

    def shopper(self) -> Shopper:
        email = f"shopper-{uuid.uuid4().hex[:10]}@example.com"
        password = f"plum-orchard-{uuid.uuid4().hex[:8]}"
        answer = self.api.post("/api/identity/users", json={"email": email, "password": password})
        assert answer.status_code == 201, answer.text
        return Shopper(self.api, log_in(self.api, email, password), email)

    def available(self, sku: str) -> int:
        answer = self.api.get(f"/api/inventory/stock/{sku}")
        assert answer.status_code == 200, answer.text
        available: int = answer.json()["available"]
        return available

    def adjust(self, sku: str, delta: int) -> httpx.Response:
        return self.api.post(
            f"/api/inventory/stock/{sku}/adjustments",
            json={"delta": delta, "reason": "system test"},
            headers=self.admin,
        )

    def products(self, count: int) -> list[dict[str, Any]]:
        return listed(self.api, "/api/catalog/products", {}, limit=str(count))

    def shipments_of(self, order_id: str) -> list[dict[str, Any]]:
        """An order's shipments, as the admin sees them."""
        return listed(self.api, "/api/shipments", self.admin, order_id=order_id)

    def every_shipment(self) -> list[dict[str, Any]]:
        """Every shipment, as the admin lists them, page after page."""
        shipments: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
            answer = self.api.get("/api/shipments", params=params, headers=self.admin)
            assert answer.status_code == 200, answer.text
            page = answer.json()
            shipments.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return shipments

    def verify(self) -> str:
        """`agora verify` in the system's directory; fails the test on any violation."""
        result = self.system.agora("verify", "--wait", "60", timeout=180)
        assert result.returncode == 0, f"agora verify failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout


@contextmanager
def open_console(system: RunningSystem) -> Iterator[httpx.Client]:
    """The admin logged in to the gateway's pages as a browser is (the login form, its CSRF
    token and the session cookie), to read the console's JSON under ``/console/api/``."""
    with httpx.Client(base_url=system.gateway_url, timeout=60) as browser:
        form = browser.get("/login")
        assert form.status_code == 200, form.text
        found = _CSRF.search(form.text)
        assert found, "the login page holds no form with a CSRF token"
        fields = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "next": "/console"}
        answer = browser.post("/login", data={**fields, "csrf_token": found.group(1)})
        assert answer.status_code == 303, answer.text
        yield browser


def checkout_trace(console: httpx.Client, order_id: str) -> dict[str, Any] | None:
    """The console's trace of an order's checkout (``/console/orders/<id>/trace`` leads to it):
    its spans and logs, or None while no service keeps a span of it."""
    found = console.get(f"/console/orders/{order_id}/trace")
    if found.status_code == 404:
        return None
    assert found.status_code == 303, found.text
    trace_id = found.headers["location"].rsplit("/", 1)[-1]
    answer = console.get(f"/console/api/traces/{trace_id}")
    assert answer.status_code == 200, answer.text
    trace: dict[str, Any] = answer.json()
    return trace


@contextmanager
def open_shop(system: RunningSystem) -> Iterator[Shop]:
    with httpx.Client(base_url=system.gateway_url, timeout=60) as api:
        yield Shop(system, api, log_in(api, ADMIN_EMAIL, ADMIN_PASSWORD))


@pytest.fixture(scope="module")
def shop(system: RunningSystem) -> Iterator[Shop]:
    with open_shop(system) as opened:
        yield opened
