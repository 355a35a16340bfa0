"""What a shopper and an admin do in the browser, as steps the tests and ``make screenshots``
share. Fields are found by their labels and buttons by their names, as a person finds them."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from urllib.parse import urljoin

from playwright.sync_api import Page, expect

# The simulated processor's test cards, as the checkout page lists them.
APPROVED = "4242 4242 4242 4242"
DECLINED = "4000 0000 0000 0002"

ADDRESS = {
    "Full name": "Ada Lovelace",
    "Address": "12 St James's Square",
    "City": "London",
    "Postal code": "SW1Y 4JH",
    "Country code": "GB",
}
# A saga takes well under a second here; a busy machine may take many.
SETTLE_MS = 60_000
ORDER_PATH = re.compile(r"/orders/([0-9a-f-]{8,})$")
# The carrier's steps in the shop under test, seconds (services/shipping/src/settings.ts: five
# each by default): short, yet long enough that a shipment is seen before it is delivered.
CARRIER_STEPS = {
    "AGORA_SHIPPING_DISPATCH_AFTER": "3",
    "AGORA_SHIPPING_DELIVER_AFTER": "3",
    "AGORA_SHIPPING_CARRIER_POLL": "0.5",
}
# Royal Mail's numbers, as shipping makes them for the address above (GB).
TRACKING_NUMBER = re.compile(r"^RM[0-9A-F]{16}$")


@dataclass(frozen=True)
class Account:
    email: str
    password: str

    @classmethod
    def new(cls) -> Account:
        tag = uuid.uuid4().hex[:10]
        return cls(f"shopper-{tag}@example.com", f"plum-orchard-{tag}")


def register(page: Page, base: str, account: Account) -> None:
    page.goto(f"{base}/register")
    page.get_by_label("Email", exact=True).fill(account.email)
    page.get_by_label("Password", exact=True).fill(account.password)
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_test_id("user-email")).to_have_text(account.email)


def log_in(page: Page, base: str, account: Account, next_path: str = "/") -> None:
    page.goto(f"{base}/login?next={next_path}")
    page.get_by_label("Email", exact=True).fill(account.email)
    page.get_by_label("Password", exact=True).fill(account.password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()


def search(page: Page, word: str) -> None:
    box = page.get_by_role("searchbox")
    box.fill(word)
    box.press("Enter")
    page.wait_for_load_state()


def add_found_products(page: Page, count: int) -> list[str]:
    """Open each of the first ``count`` products the page lists and add one to the cart."""
    cards = page.get_by_test_id("product-card")
    expect(cards.first).to_be_visible()
    links = [cards.nth(i).get_by_role("link").first.get_attribute("href") for i in range(count)]
    listing = page.url
    names: list[str] = []
    for href in links:
        assert href is not None
        page.goto(urljoin(listing, href))
        names.append(page.get_by_role("heading", level=1).inner_text())
        page.get_by_role("button", name="Add to cart").click()
        page.wait_for_load_state()
        page.goto(listing)
    return names


def checkout(page: Page, base: str, card: str) -> str:
    """From the cart to the order's page; the order's id."""
    page.goto(f"{base}/cart")
    page.get_by_role("link", name="Checkout").click()
    for label, value in ADDRESS.items():
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_label("Card number", exact=True).fill(card)
    page.get_by_role("button", name="Place order").click()
    page.wait_for_url(ORDER_PATH)
    match = ORDER_PATH.search(page.url)
    assert match is not None, page.url
    return match.group(1)


def settled_status(page: Page, status: str) -> None:
    expect(page.get_by_test_id("order-status")).to_have_text(status, timeout=SETTLE_MS)


def tracked_shipment(page: Page) -> str:
    """Wait for the order's page to show its shipment's tracking number; the shipment's status
    (shipping's word) at that moment."""
    expect(page.get_by_test_id("tracking-number")).to_have_text(TRACKING_NUMBER, timeout=SETTLE_MS)
    return page.get_by_test_id("shipment-status").get_attribute("data-status") or ""


def delivered(page: Page) -> None:
    expect(page.get_by_test_id("shipment-status")).to_have_text("Delivered", timeout=SETTLE_MS)
