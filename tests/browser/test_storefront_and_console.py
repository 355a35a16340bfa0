"""The shop and its console in a real browser, against ``agora up`` with all its services.

A shopper searches, puts two products in the cart, checks out and watches the order turn
CONFIRMED on its page without reloading it, then its parcel get a tracking number and move on
to delivered (the carrier's steps are a few seconds here); a declined card shows the order
CANCELLED with a clear reason. An admin opens the console, sees every service healthy, opens
that checkout's trace and finds the gateway's, orders', inventory's and payments' spans in one
waterfall; a service that fails while the console is open turns red, then green once ``agora up``
restarted it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from journeys import (
    APPROVED,
    CARRIER_STEPS,
    DECLINED,
    SETTLE_MS,
    Account,
    add_found_products,
    checkout,
    delivered,
    log_in,
    register,
    search,
    settled_status,
    tracked_shipment,
)
from playwright.sync_api import Browser, Page, Route, expect
from shopping import ADMIN_EMAIL, ADMIN_PASSWORD, admin_env, open_shop

from agora.topology import load_topology
from agora_tools.harness import RunningSystem
from agora_tools.testing import wait_restarted

pytestmark = [pytest.mark.system, pytest.mark.browser, pytest.mark.timeout(900)]

SERVICES = [*load_topology().services, "gateway"]
# nats, the eight services, the gateway
PROCESSES = 10
ADMIN = Account(ADMIN_EMAIL, ADMIN_PASSWORD)


@dataclass
class Journey:
    """What the shopper's test leaves for the admin's: the order it placed."""

    orders: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def system(
    tmp_path_factory: pytest.TempPathFactory, shape: tuple[str, ...]
) -> Iterator[RunningSystem]:
    directory = tmp_path_factory.mktemp("browser") / "shop"
    env = {**os.environ, **admin_env(**CARRIER_STEPS)}
    with RunningSystem(directory, *shape, env=env) as running:
        running.wait_healthy(count=PROCESSES)
        yield running


@pytest.fixture(scope="module")
def journey(system: RunningSystem) -> Journey:
    """One per shop: the admin's test reads the orders of the shop the shopper's used."""
    return Journey()


@pytest.fixture
def page(chromium: Browser, system: RunningSystem) -> Iterator[Page]:
    """A page whose journey must not run into the Content-Security-Policy (ADR 22): a script or
    style the policy blocks would be a part of the shop that silently does not work."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(30_000)
    blocked: list[str] = []
    opened.on(
        "console",
        lambda message: (
            blocked.append(f"{opened.url}: {message.text}")
            if "Content Security Policy" in message.text
            else None
        ),
    )
    yield opened
    context.close()
    assert not blocked, blocked


def test_a_shopper_checks_out_and_sees_the_order_confirmed_and_its_parcel_delivered_live(
    page: Page, system: RunningSystem, journey: Journey
) -> None:
    base = system.gateway_url
    page.goto(base)
    expect(page.get_by_test_id("product-card").first).to_be_visible()
    everything = page.get_by_test_id("product-card").count()
    register(page, base, Account.new())

    search(page, "coffee")
    found = page.get_by_test_id("product-card")
    expect(found.filter(has_text="Coffee Grinder")).to_have_count(1)
    expect(found.filter(has_text="Headphones")).to_have_count(0)
    assert 2 <= found.count() < everything
    names = add_found_products(page, 2)
    expect(page.get_by_test_id("cart-count")).to_have_text("2")

    page.goto(f"{base}/cart")
    for name in names:
        expect(page.get_by_test_id("cart-line").filter(has_text=name)).to_have_count(1)
    order_id = checkout(page, base, APPROVED)
    journey.orders.append(order_id)

    # A mark on the page's window: a reload would wipe it, so finding it again afterwards
    # proves the status changed in place.
    page.evaluate("window.__stayed = true")
    settled_status(page, "CONFIRMED")
    assert page.evaluate("window.__stayed === true")
    for name in names:
        expect(page.get_by_text(name, exact=True).first).to_be_visible()

    # The page showed no shipment when it was made (the order was pending): the tracking
    # number comes live, and the parcel moves on to delivered, still without a reload.
    first_seen = tracked_shipment(page)
    assert first_seen in {"label_created", "dispatched"}, first_seen
    delivered(page)
    assert page.evaluate("window.__stayed === true")
    expect(page.get_by_test_id("shipment-carrier")).to_have_text("Royal Mail, Tracked 48")

    page.goto(f"{base}/orders")
    expect(page.get_by_role("link", name=order_id[:8])).to_be_visible()
    page.goto(f"{base}/messages")
    expect(page.get_by_text("confirmed", exact=False).first).to_be_visible(timeout=SETTLE_MS)


def test_a_declined_card_shows_the_order_cancelled_with_its_reason(
    page: Page, system: RunningSystem
) -> None:
    base = system.gateway_url
    register(page, base, Account.new())
    search(page, "tea")
    add_found_products(page, 1)
    checkout(page, base, DECLINED)
    page.evaluate("window.__stayed = true")
    settled_status(page, "CANCELLED")
    expect(page.get_by_test_id("cancel-reason")).to_contain_text("declined", ignore_case=True)
    assert page.evaluate("window.__stayed === true")


def test_an_admin_sees_every_service_healthy_and_follows_a_checkout_across_services(
    page: Page, system: RunningSystem, journey: Journey
) -> None:
    base = system.gateway_url
    if not journey.orders:  # run on its own: place the checkout to follow first
        register(page, base, Account.new())
        search(page, "coffee")
        add_found_products(page, 1)
        journey.orders.append(checkout(page, base, APPROVED))
        settled_status(page, "CONFIRMED")
        page.context.clear_cookies()

    log_in(page, base, ADMIN, "/console")
    page.goto(f"{base}/console")
    rows = page.get_by_test_id("service-row")
    for service in SERVICES:
        row = rows.and_(page.locator(f'[data-service="{service}"]'))
        expect(row.first).to_be_visible()
        expect(row.first).to_have_attribute("data-health", "up", timeout=SETTLE_MS)
    expect(page.get_by_test_id("service-map")).to_be_visible()

    page.goto(f"{base}/console/orders/{journey.orders[0]}/trace")
    waterfall = page.get_by_test_id("waterfall")
    expect(waterfall).to_be_visible()
    spans = waterfall.get_by_test_id("span")
    for service in ("gateway", "orders", "inventory", "payments"):
        expect(spans.and_(page.locator(f'[data-service="{service}"]')).first).to_be_visible()


def test_a_service_that_fails_while_the_console_is_open_turns_red_then_green_again(
    page: Page, system: RunningSystem
) -> None:
    base = system.gateway_url
    log_in(page, base, ADMIN, "/console")
    page.goto(f"{base}/console")
    row = page.locator('[data-testid="service-row"][data-service="catalog"]').first
    expect(row).to_have_attribute("data-health", "up", timeout=SETTLE_MS)

    catalog, gateway = system.process_of("catalog"), system.process_of("gateway")
    status = page.locator("#console-status")
    # A restart takes less than two of the console's refreshes apart: a plain kill could come and
    # go unseen. So catalog goes down at a moment the console is sure to see.
    if catalog["pid"] == gateway["pid"]:
        # In one process with the gateway (--together), the console goes down with catalog. It is
        # killed as the console's next refresh leaves: that refresh fails, the page says it could
        # not refresh, and marks what it showed as stale.
        def kill_then_send(route: Route) -> None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(catalog["pid"], signal.SIGKILL)
            route.continue_()

        page.route("**/console/api/services", kill_then_send)
        expect(status).to_have_class(re.compile(r"\bstale\b"), timeout=SETTLE_MS)
        expect(status).to_contain_text("Could not refresh", timeout=SETTLE_MS)
        page.unroute("**/console/api/services", kill_then_send)
    else:
        # Catalog hangs (stopped, its port still open): its /readyz times out, and the row is red
        # for as long as it hangs. Then it is killed.
        os.kill(catalog["pid"], signal.SIGSTOP)
        try:
            expect(row).not_to_have_attribute("data-health", "up", timeout=SETTLE_MS)
        finally:
            os.kill(catalog["pid"], signal.SIGKILL)
    wait_restarted(system, catalog, timeout=60)
    # agora up restarts it on its own; the console shows it once it answers again.
    expect(status).not_to_have_class(re.compile(r"\bstale\b"), timeout=SETTLE_MS)
    expect(row).to_have_attribute("data-health", "up", timeout=SETTLE_MS)


def test_the_shop_works_at_phone_width_and_from_the_keyboard(
    chromium: Browser, system: RunningSystem
) -> None:
    base = system.gateway_url
    context = chromium.new_context(viewport={"width": 375, "height": 812}, is_mobile=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        # Registering from the keyboard alone: the fields in tab order, Enter sends the form.
        account = Account.new()
        page.goto(f"{base}/register")
        page.get_by_label("Email", exact=True).focus()
        page.keyboard.type(account.email)
        page.keyboard.press("Tab")
        page.keyboard.type(account.password)
        page.keyboard.press("Enter")
        expect(page.get_by_test_id("user-email")).to_have_text(account.email)

        search(page, "tea")
        add_found_products(page, 1)
        for path in ("/", "/cart", "/checkout", "/orders", "/messages"):
            page.goto(f"{base}{path}")
            wider = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert wider <= 0, f"{path} is {wider} px wider than a phone's screen"

        # An address the API refuses: the message stands beside the field, the rest is kept.
        page.goto(f"{base}/checkout")
        for label, value in {"Full name": "Ada", "Address": "1 Main St", "City": "London"}.items():
            page.get_by_label(label, exact=True).fill(value)
        page.get_by_label("Postal code", exact=True).fill("N1 9GU")
        page.get_by_label("Country code", exact=True).fill("G")
        page.get_by_label("Card number", exact=True).fill("4242 4242 4242 4241")
        page.get_by_role("button", name="Place order").click()
        errors = page.locator('[data-testid="form-error"][data-field]')
        expect(errors.first).to_be_visible()
        fields = {errors.nth(i).get_attribute("data-field") for i in range(errors.count())}
        assert {"country", "card_number"} <= fields
        expect(page.get_by_label("City", exact=True)).to_have_value("London")
    finally:
        context.close()


def test_bad_addresses_and_a_dead_session_get_clear_pages(
    page: Page, system: RunningSystem
) -> None:
    base = system.gateway_url
    with open_shop(system) as shop:
        stranger = shop.shopper()
        placed = stranger.place([{"sku": shop.products(1)[0]["sku"], "quantity": 1}])
        assert placed.status_code == 202, placed.text
        strangers_order = placed.json()["id"]
    register(page, base, Account.new())

    answer = page.goto(f"{base}/products/NO-SUCH-PRODUCT")
    assert answer is not None
    assert answer.status == 404
    expect(page.get_by_test_id("error-page")).to_be_visible()
    expect(page.get_by_role("heading", level=1)).to_have_text("Not found")

    # Another user's order is not there for this one, as an unknown order would not be.
    answer = page.goto(f"{base}/orders/{strangers_order}")
    assert answer is not None
    assert answer.status == 404
    expect(page.get_by_test_id("error-page")).to_be_visible()
    assert "Traceback" not in page.content()

    # A session whose token no longer verifies (expired, or signed by no key of identity's):
    # back to the login page, saying so, and the cookie is gone.
    page.context.add_cookies(
        [{"name": "agora_session", "value": "eyJhbGciOiJFZERTQSJ9.e30.c2ln", "url": base}]
    )
    page.goto(f"{base}/orders")
    expect(page).to_have_url(re.compile(r"/login\?"))
    expect(page.get_by_test_id("form-error")).to_contain_text("expired")
    assert "agora_session" not in {cookie["name"] for cookie in page.context.cookies()}
