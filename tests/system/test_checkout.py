"""Checkout through the gateway, with `agora up` running every service and two inventories.

A shopper buys with each of the processor's test cards; a customer cancels before the charge; five
shoppers race for the last unit across the two inventory replicas; an Idempotency-Key is sent
twice, also at once; and payments stops answering, so the authorization step hits its deadline.
After each, `agora verify` finds every invariant holding across the services.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from shopping import (
    APPROVED,
    DECLINED,
    INSUFFICIENT_FUNDS,
    PROCESSOR_ERROR,
    PROCESSOR_TIMEOUT,
    Shop,
    Shopper,
    admin_env,
)

from agora_tools.harness import RunningSystem, wait_for

pytest_plugins = ["shopping"]  # the fixture shop
pytestmark = [pytest.mark.system, pytest.mark.timeout(900)]

# nats, identity, catalog, two inventories, payments, orders, cart, notifications, shipping, the
# gateway
PROCESSES = 11
STEP_TIMEOUT = 1.0  # seconds the saga waits for an answer before trying again


@pytest.fixture(scope="module")
def system(
    tmp_path_factory: pytest.TempPathFactory, shape: tuple[str, ...]
) -> Iterator[RunningSystem]:
    env = {
        **os.environ,
        **admin_env(
            AGORA_ORDERS_STEP_TIMEOUT=str(STEP_TIMEOUT),
            AGORA_PAYMENTS_PROCESSOR_TIMEOUT="0.5",
        ),
    }
    directory = tmp_path_factory.mktemp("checkout") / "shop"
    with RunningSystem(directory, "--scale", "inventory=2", *shape, env=env) as running:
        running.wait_healthy(count=PROCESSES)
        yield running


@pytest.fixture(scope="module")
def skus(shop: Shop) -> list[str]:
    return [product["sku"] for product in shop.products(40)]


@pytest.fixture
def sku(skus: list[str]) -> str:
    """A product no other test of this module buys."""
    return skus.pop()


def placed(answer: Any) -> str:
    """The id of the order an answer to POST /api/orders is about (a replay answers 200)."""
    assert answer.status_code in {200, 201, 202}, answer.text
    order_id: str = answer.json()["id"]
    return order_id


def bought(
    shopper: Shopper, sku: str, card: str = APPROVED, timeout: float = 30.0
) -> dict[str, Any]:
    """The order of one ``sku`` that ``shopper`` placed, paying with ``card``, once it has ended."""
    order_id = placed(shopper.place([{"sku": sku, "quantity": 1}], card))
    return shopper.wait_until_terminal(order_id, timeout=timeout)


def test_an_approved_card_confirms_the_order_takes_the_stock_and_charges_once(
    shop: Shop, sku: str
) -> None:
    shopper = shop.shopper()
    before = shop.available(sku)

    answer = shopper.place([{"sku": sku, "quantity": 2}], APPROVED)
    order = shopper.wait_until_terminal(placed(answer), timeout=5)

    assert answer.status_code == 202
    assert answer.headers["location"].endswith(f"/orders/{order['id']}")
    assert answer.json()["status"] == "PENDING"
    assert order["status"] == "CONFIRMED", order
    assert order["reason"] is None
    assert order["total"] == 2 * order["lines"][0]["unit_price"]
    assert shop.available(sku) == before - 2
    (payment,) = shopper.payments(order["id"])
    assert payment["status"] == "captured"
    assert payment["amount"] == order["total"]
    assert payment["card_brand"] == "visa"
    assert payment["card_last4"] == "4242"
    assert "every invariant holds" in shop.verify()


@pytest.mark.parametrize("card", [DECLINED, INSUFFICIENT_FUNDS], ids=["declined", "no-funds"])
def test_a_refused_card_cancels_the_order_and_gives_the_stock_back(
    shop: Shop, sku: str, card: str
) -> None:
    shopper = shop.shopper()
    before = shop.available(sku)

    order = bought(shopper, sku, card)

    assert order["status"] == "CANCELLED"
    assert order["reason"] == "payment_declined"
    assert shop.available(sku) == before
    (payment,) = shopper.payments(order["id"])
    assert payment["status"] == "declined"
    assert payment["captured_amount"] == 0
    shop.verify()


@pytest.mark.parametrize("card", [PROCESSOR_ERROR, PROCESSOR_TIMEOUT], ids=["error", "timeout"])
def test_a_failing_processor_is_retried_then_the_order_ends_uncharged(
    shop: Shop, sku: str, card: str
) -> None:
    shopper = shop.shopper()
    before = shop.available(sku)

    order = bought(shopper, sku, card, timeout=60)

    assert order["status"] == "CANCELLED"
    assert order["reason"] == "payment_failed"
    assert order["checkout"]["attempts"] > 1  # it was tried again before giving up
    assert shop.available(sku) == before
    assert all(p["captured_amount"] == 0 for p in shopper.payments(order["id"]))
    shop.verify()


def test_a_customer_cancels_before_the_charge_and_gets_the_stock_back(shop: Shop, sku: str) -> None:
    shopper = shop.shopper()
    before = shop.available(sku)
    # The processor takes its time over this card, which leaves the order uncharged a while.
    order_id = placed(shopper.place([{"sku": sku, "quantity": 3}], PROCESSOR_TIMEOUT))

    cancelled = shopper.cancel(order_id)
    order = shopper.wait_until_terminal(order_id)

    assert cancelled.status_code == 200, cancelled.text
    assert order["status"] == "CANCELLED"
    assert order["reason"] == "customer_cancelled"
    assert shop.available(sku) == before
    assert all(p["captured_amount"] == 0 for p in shopper.payments(order_id))
    assert shopper.cancel(order_id).status_code == 200  # cancelling again changes nothing
    shop.verify()


def test_a_charged_order_cannot_be_cancelled(shop: Shop, sku: str) -> None:
    shopper = shop.shopper()
    order = bought(shopper, sku)

    refused = shopper.cancel(order["id"])

    assert order["status"] == "CONFIRMED"
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert shopper.order(order["id"]).json()["status"] == "CONFIRMED"


def test_five_shoppers_race_for_the_last_unit_and_exactly_one_gets_it(shop: Shop, sku: str) -> None:
    adjusted = shop.adjust(sku, 1 - shop.available(sku))
    assert adjusted.status_code == 200, adjusted.text
    assert adjusted.json() == {"sku": sku, "available": 1}
    shoppers = [shop.shopper() for _ in range(5)]

    with ThreadPoolExecutor(max_workers=5) as pool:
        answers = list(pool.map(lambda s: s.place([{"sku": sku, "quantity": 1}]), shoppers))
    orders = [s.wait_until_terminal(placed(a)) for s, a in zip(shoppers, answers, strict=True)]

    statuses = sorted((o["status"], o["reason"]) for o in orders)
    assert statuses == [("CANCELLED", "out_of_stock")] * 4 + [("CONFIRMED", None)]
    assert shop.available(sku) == 0
    # The race ran against two inventory replicas, both serving, sharing one durable consumer.
    inventories = [p for p in shop.system.status() if p["service"] == "inventory"]
    assert [p["healthy"] for p in inventories] == [True, True]
    shop.verify()


def test_the_same_idempotency_key_gives_one_order_also_when_sent_at_once(
    shop: Shop, sku: str
) -> None:
    shopper = shop.shopper()
    lines = [{"sku": sku, "quantity": 1}]
    key = uuid.uuid4().hex

    first = shopper.place(lines, key=key)
    again = shopper.place(lines, key=key)
    other_body = shopper.place([{"sku": sku, "quantity": 2}], key=key)
    racing_key = uuid.uuid4().hex
    with ThreadPoolExecutor(max_workers=2) as pool:
        racing = list(pool.map(lambda _: shopper.place(lines, key=racing_key), range(2)))

    assert first.status_code == 202
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == placed(first)
    assert other_body.status_code == 422
    assert other_body.headers["content-type"].startswith("application/problem+json")
    racing_ids = {placed(answer) for answer in racing if answer.status_code != 409}
    assert len(racing_ids) == 1, [a.text for a in racing]
    listed = shopper.api.get("/api/orders", headers=shopper.headers).json()["items"]
    assert sorted(o["id"] for o in listed) == sorted({placed(first), *racing_ids})
    for order_id in (placed(first), *racing_ids):
        shopper.wait_until_terminal(order_id)
    shop.verify()


def test_another_customer_sees_none_of_my_orders_or_payments(shop: Shop, sku: str) -> None:
    mine, theirs = shop.shopper(), shop.shopper()
    order_id = placed(mine.place([{"sku": sku, "quantity": 1}]))
    mine.wait_until_terminal(order_id)

    assert theirs.order(order_id).status_code == 404
    assert theirs.cancel(order_id).status_code == 404
    assert theirs.payments(order_id) == []
    assert all(
        o["id"] != order_id
        for o in theirs.api.get("/api/orders", headers=theirs.headers).json()["items"]
    )
    assert shop.api.get(f"/api/orders/{order_id}", headers=shop.admin).status_code == 200


def test_a_reservation_never_answered_hits_its_deadline_and_the_order_ends(
    shop: Shop, system: RunningSystem, sku: str, shape: tuple[str, ...]
) -> None:
    if shape:
        pytest.skip("inventory's first replica shares its process with orders: not one stops alone")
    shopper = shop.shopper()
    before = shop.available(sku)
    stopped = system.agora("stop", "inventory")  # both replicas: nobody answers ReserveStock
    assert stopped.returncode == 0, stopped.stderr
    try:
        order_id = placed(shopper.place([{"sku": sku, "quantity": 1}]))

        def gave_up() -> dict[str, Any] | None:
            order: dict[str, Any] = shopper.order(order_id).json()
            return order if order["checkout"]["step"] == "compensating" else None

        # No answer comes: the saga asks again at each deadline, then compensates.
        waiting = wait_for("the reservation's deadline to end the saga", gave_up, timeout=60)
        assert waiting["status"] == "PENDING"  # not CANCELLED before the release is acknowledged
        assert waiting["checkout"]["attempts"] >= 2
    finally:
        started = system.agora("start", "inventory")
        assert started.returncode == 0, started.stderr

    order = shopper.wait_until_terminal(order_id, timeout=60)

    assert order["status"] == "CANCELLED"
    assert order["reason"] == "stock_timeout"
    # The reservations inventory finds waiting when it comes back are released, not kept.
    assert shop.available(sku) == before
    assert shopper.payments(order_id) == []
    shop.verify()


def test_verify_finds_a_violation_and_says_what_it_is(shop: Shop, sku: str) -> None:
    shopper = shop.shopper()
    bought(shopper, sku)
    # Stock taken out of the database behind inventory's back cannot be explained by any order.
    database = shop.system.directory / ".agora" / "data" / "inventory.db"
    _take_stock_behind_inventorys_back(database, sku)

    result = shop.system.agora("verify", "--wait", "5", timeout=120)

    assert result.returncode == 1
    assert f"[stock] sku {sku}" in result.stdout
    assert "1 violation(s)" in result.stdout
    _take_stock_behind_inventorys_back(database, sku, -1)
    shop.verify()


def _take_stock_behind_inventorys_back(database: Path, sku: str, units: int = 1) -> None:
    import sqlite3

    with sqlite3.connect(database, timeout=10) as connection:
        changed = connection.execute(
            "UPDATE stock SET on_hand = on_hand - ? WHERE sku = ?", (units, sku)
        ).rowcount
    assert changed == 1
