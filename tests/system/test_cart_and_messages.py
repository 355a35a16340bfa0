"""The shopper's side through the gateway, with `agora up` running all seven services.

A new user finds a welcome message; fills a cart with two products, checks out from it and finds
the cart without them and one message about the confirmed order; a declined checkout leaves one
message about the cancellation; a client following an order's event stream sees PENDING ... then
CONFIRMED, through the gateway. Users who register while the broker is down get their welcome
once it is back. Nobody reads or changes another user's cart, messages or event stream. It all
runs twice: with the cart in SQLite (the default) and in the shared Redis, under a key prefix of
the test's own. `agora verify` (one message per user and per finished order among its checks)
passes at the end.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from shopping import APPROVED, DECLINED, Shop, admin_env

from agora_tools.harness import SHAPES, RunningSystem
from agora_tools.testing import REDIS_URL, redis_prefix

pytest_plugins = ["shopping"]  # the fixture shop
pytestmark = [pytest.mark.system, pytest.mark.timeout(900)]

# nats, identity, catalog, inventory, payments, orders, cart, notifications, shipping, the gateway
PROCESSES = 10
PROBLEM = "application/problem+json"


# Where the carts live, and the shape `agora up` runs the shop in (ADR 53): the Redis carts with
# a process per service, the SQLite ones in both shapes.
SETUPS = [("sqlite", "apart"), ("redis", "apart"), ("sqlite", "together")]


@pytest.fixture(scope="module", params=SETUPS, ids=["-".join(setup) for setup in SETUPS])
def system(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningSystem]:
    env = {**os.environ, **admin_env()}
    carts, shape = request.param
    with ExitStack() as stack:
        if carts == "redis":
            prefix = stack.enter_context(redis_prefix("cart"))
            env.update(AGORA_CART_REDIS_URL=REDIS_URL, AGORA_CART_REDIS_PREFIX=prefix)
        directory = tmp_path_factory.mktemp(f"shopper-{carts}-{shape}") / "shop"
        running = stack.enter_context(RunningSystem(directory, *SHAPES[shape], env=env))
        running.wait_healthy(count=PROCESSES)
        yield running


@pytest.fixture(scope="module")
def skus(shop: Shop) -> list[str]:
    return [product["sku"] for product in shop.products(30)]


def follow(api: httpx.Client, order_id: str, headers: dict[str, str]) -> Iterator[dict[str, Any]]:
    """The `status` events of an order's stream through the gateway, as they arrive."""
    timeout = httpx.Timeout(30.0)
    with api.stream(
        "GET", f"/api/orders/{order_id}/events", headers=headers, timeout=timeout
    ) as reply:
        assert reply.status_code == 200, reply.read()
        assert reply.headers["content-type"].startswith("text/event-stream")
        event: dict[str, str] = {}
        for line in reply.iter_lines():
            if line == "":
                if event.get("event") == "status":
                    yield json.loads(event["data"])
                event = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                event[name] = value


def test_a_new_user_finds_a_welcome_message(shop: Shop) -> None:
    shopper = shop.shopper()

    (welcome,) = shopper.wait_for_messages(1, kind="welcome")

    assert welcome["order_id"] is None
    assert welcome["subject"]
    assert welcome["body"]
    assert set(welcome) >= {"id", "kind", "order_id", "subject", "body", "created_at"}


def test_checking_out_from_the_cart_empties_it_and_leaves_one_message(
    shop: Shop, skus: list[str]
) -> None:
    shopper = shop.shopper()
    first, second, kept = skus.pop(), skus.pop(), skus.pop()
    for sku, quantity in ((first, 2), (second, 1), (kept, 1)):
        assert shopper.put_in_cart(sku, quantity).status_code == 200
    assert shopper.api.delete(f"/api/cart/items/{kept}", headers=shopper.headers).status_code == 200

    cart = shopper.cart()
    assert [(item["sku"], item["quantity"]) for item in cart["items"]] == [(first, 2), (second, 1)]
    assert cart["total"] == sum(item["line_total"] for item in cart["items"]) > 0
    assert all(
        item["line_total"] == item["unit_price"] * item["quantity"] for item in cart["items"]
    )

    answer = shopper.place_from_cart(APPROVED)
    assert answer.status_code == 202, answer.text
    order = answer.json()
    assert sorted((line["sku"], line["quantity"]) for line in order["lines"]) == sorted(
        [(first, 2), (second, 1)]
    )
    assert order["total"] == cart["total"]
    assert shopper.wait_until_terminal(order["id"])["status"] == "CONFIRMED"

    deadline = time.monotonic() + 30
    while shopper.cart()["items"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert shopper.cart()["items"] == []
    (confirmed,) = shopper.wait_for_messages(1, order_id=order["id"])
    assert confirmed["kind"] == "order_confirmed"
    # No second message comes for the same order.
    time.sleep(1.0)
    assert len([m for m in shopper.messages() if m["order_id"] == order["id"]]) == 1


def test_an_empty_cart_cannot_be_ordered(shop: Shop) -> None:
    shopper = shop.shopper()

    answer = shopper.place_from_cart(APPROVED)

    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == PROBLEM


def test_a_declined_checkout_leaves_one_message_about_the_cancellation(
    shop: Shop, skus: list[str]
) -> None:
    shopper = shop.shopper()
    assert shopper.put_in_cart(skus.pop(), 1).status_code == 200

    answer = shopper.place_from_cart(DECLINED)
    assert answer.status_code == 202, answer.text
    order = shopper.wait_until_terminal(answer.json()["id"])
    assert (order["status"], order["reason"]) == ("CANCELLED", "payment_declined")

    (cancelled,) = shopper.wait_for_messages(1, order_id=order["id"])
    assert cancelled["kind"] == "order_cancelled"


def test_a_client_following_the_order_sees_pending_then_confirmed(
    shop: Shop, skus: list[str]
) -> None:
    shopper = shop.shopper()
    answer = shopper.place([{"sku": skus.pop(), "quantity": 1}], APPROVED)
    assert answer.status_code == 202, answer.text
    order_id = answer.json()["id"]

    seen = [
        (event["status"], event["checkout"]["step"])
        for event in follow(shopper.api, order_id, shopper.headers)
    ]

    statuses = [status for status, _ in seen]
    assert statuses[-1] == "CONFIRMED"
    assert set(statuses[:-1]) <= {"PENDING"}
    # Unless the checkout was over before the stream began, PENDING came first.
    assert statuses[0] == "PENDING" or len(statuses) == 1
    assert seen[-1][1] == "done"
    # Following a finished order shows where it ended, and the stream ends.
    again = list(follow(shopper.api, order_id, shopper.headers))
    assert [event["status"] for event in again] == ["CONFIRMED"]


def test_nobody_reads_or_changes_another_users_cart_messages_or_stream(
    shop: Shop, skus: list[str]
) -> None:
    alice, bob = shop.shopper(), shop.shopper()
    sku = skus.pop()
    assert alice.put_in_cart(sku, 3).status_code == 200
    order = alice.place([{"sku": skus.pop(), "quantity": 1}], APPROVED).json()
    alice.wait_for_messages(1, kind="welcome")
    bob.wait_for_messages(1, kind="welcome")

    # Bob's cart is his own: his changes never reach Alice's.
    assert bob.cart()["items"] == []
    assert bob.put_in_cart(sku, 1).status_code == 200
    assert bob.api.delete("/api/cart", headers=bob.headers).status_code == 200
    assert [(i["sku"], i["quantity"]) for i in alice.cart()["items"]] == [(sku, 3)]
    # Her order's stream and her messages are not his.
    stream = bob.api.get(f"/api/orders/{order['id']}/events", headers=bob.headers)
    assert stream.status_code == 404
    assert stream.headers["content-type"] == PROBLEM
    assert all(m["order_id"] != order["id"] for m in bob.messages())
    assert len(bob.messages()) == 1
    # Without a token there is nothing to read at all.
    for path in ("/api/cart", "/api/notifications", f"/api/orders/{order['id']}/events"):
        assert shop.api.get(path).status_code == 401
    # Only an admin lists every message.
    assert bob.api.get("/api/notifications/all", headers=bob.headers).status_code == 403
    assert shop.api.get("/api/notifications/all", headers=shop.admin).status_code == 200


def test_bad_cart_input_is_a_clear_4xx(shop: Shop, skus: list[str]) -> None:
    shopper = shop.shopper()
    sku = skus[0]

    unknown = shopper.put_in_cart("NO-SUCH-SKU-1", 1)
    assert unknown.status_code == 404, unknown.text
    assert unknown.headers["content-type"] == PROBLEM
    for body in ({"quantity": -1}, {"quantity": "two"}, {"quantity": 1, "price": 1}, {}):
        answer = shopper.api.put(f"/api/cart/items/{sku}", json=body, headers=shopper.headers)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.headers["content-type"] == PROBLEM
    assert shopper.cart()["items"] == []


def test_users_registered_while_the_broker_is_down_get_their_welcome_once_it_is_back(
    system: RunningSystem, shop: Shop
) -> None:
    assert system.agora("stop", "nats", "--kill").returncode == 0
    try:
        shoppers = [shop.shopper() for _ in range(3)]  # identity keeps accepting registrations
        time.sleep(2.0)
        # The welcome travels only as an event: none can have come while the broker was away.
        assert all(s.messages() == [] for s in shoppers)
    finally:
        assert system.agora("start", "nats").returncode == 0

    for shopper in shoppers:
        (welcome,) = shopper.wait_for_messages(1, timeout=60, kind="welcome")
        assert welcome["order_id"] is None


def test_agora_verify_finds_one_message_per_user_and_per_finished_order(shop: Shop) -> None:
    report = shop.verify()

    assert "messages" in report
