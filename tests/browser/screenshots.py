"""``make screenshots``: the README's pictures, taken from a shop started for the purpose.

Starts ``agora up`` in a temporary directory, walks a shopper through a checkout and an admin
through the console in the machine's Chromium, and writes PNGs into ``docs/screenshots/``
(or ``--out``). The browser tests use the same steps and write nothing into ``docs/``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1] / "system")]

from chromium import browser, ensure  # noqa: E402 (after the path above)
from journeys import (  # noqa: E402 (after the path above)
    APPROVED,
    SETTLE_MS,
    Account,
    add_found_products,
    checkout,
    log_in,
    register,
    search,
    settled_status,
)
from playwright.sync_api import Page, ViewportSize, expect  # noqa: E402 (after the path above)
from shopping import ADMIN_EMAIL, ADMIN_PASSWORD, admin_env, open_shop  # noqa: E402 (after the path above)

from agora_tools.harness import RunningSystem  # noqa: E402 (after the path above)

ROOT = Path(__file__).parents[2]
PROCESSES = 10
WIDE: ViewportSize = {"width": 1280, "height": 860}
TALL: ViewportSize = {"width": 1280, "height": 1500}


def shoot(page: Page, out: Path, name: str) -> None:
    path = out / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def traffic(system: RunningSystem, stop: threading.Event) -> None:
    """Shoppers browsing and ordering, so the console's map has rates on its edges."""
    with open_shop(system) as shop:
        shopper = shop.shopper()
        skus = [product["sku"] for product in shop.products(10)]
        turn = 0
        while not stop.is_set():
            shop.api.get("/api/catalog/products", params={"q": "coffee"})
            shopper.place([{"sku": skus[turn % len(skus)], "quantity": 1}])
            turn += 1
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    out: Path = parser.parse_args().out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    executable = ensure()
    with (
        tempfile.TemporaryDirectory(prefix="agora-screenshots-") as directory,
        RunningSystem(Path(directory), env={**os.environ, **admin_env()}) as system,
        browser(executable) as chromium,
    ):
        system.wait_healthy(count=PROCESSES)
        base = system.gateway_url
        shopper = chromium.new_context(viewport=WIDE)
        page = shopper.new_page()
        page.goto(base)
        expect(page.get_by_test_id("product-card").first).to_be_visible()
        shoot(page, out, "storefront")

        register(page, base, Account.new())
        search(page, "coffee")
        add_found_products(page, 2)
        order_id = checkout(page, base, APPROVED)
        settled_status(page, "CONFIRMED")
        shoot(page, out, "order")
        shopper.close()

        admin = chromium.new_context(viewport=TALL)
        page = admin.new_page()
        log_in(page, base, Account(ADMIN_EMAIL, ADMIN_PASSWORD), "/console")
        stop = threading.Event()
        shoppers = threading.Thread(target=traffic, args=(system, stop), daemon=True)
        shoppers.start()
        try:
            page.goto(f"{base}/console")
            expect(page.get_by_test_id("service-map")).to_be_visible()
            # A few refreshes under traffic, so the rates and the map's edges are live.
            page.wait_for_timeout(8_000)
            shoot(page, out, "console")
        finally:
            stop.set()
            shoppers.join(timeout=30)
        page.set_viewport_size(WIDE)
        page.goto(f"{base}/console/orders/{order_id}/trace")
        expect(page.get_by_test_id("waterfall")).to_be_visible(timeout=SETTLE_MS)
        shoot(page, out, "trace")
        admin.close()


if __name__ == "__main__":
    main()
