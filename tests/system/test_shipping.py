"""Shipping through the gateway, with `agora up` running every service and a carrier in a hurry.

A shopper's confirmed order gets exactly one shipment, which the simulated carrier moves to
``delivered``; the shopper is told it is on its way, once; the console's trace of the checkout
holds shipping's spans; and `agora verify` finds every invariant holding.

Then an OrderConfirmed v2 published by hand with a broken shipping address is dead-lettered by
shipping, naming the field; the operator puts a fixed copy in its place and replays it with
`agora events replay`, twice: the order gets one shipment. That order is made up (orders does not
know it), so this test runs last and `agora verify` is not asked after it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import nats
import pytest
from shopping import APPROVED, DELIVERED, Shop, admin_env, checkout_trace, open_console

from agora.messaging.deadletters import DeadLetter, dead_letters
from agora.messaging.envelope import envelope, stream_name
from agora_tools.harness import ADDRESS, RunningSystem, wait_for
from contracts.base import subject_of
from contracts.orders import OrderConfirmedV2, OrderLine, ShippingAddress

pytest_plugins = ["shopping"]  # the fixture shop
pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

# nats, identity, catalog, inventory, payments, orders, cart, notifications, shipping, gateway
PROCESSES = 10
# The carrier's steps, in seconds: a label is collected, and delivered, this long after.
STEP = "0.5"
STARTUP_BOUND = 480.0  # seconds for the shop to be up: a bound a busy shared machine can meet
CONFIRMATIONS = subject_of(OrderConfirmedV2)
CONSUMER = "shipping__create_shipment"


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    env = {
        **os.environ,
        **admin_env(
            AGORA_SHIPPING_DISPATCH_AFTER=STEP,
            AGORA_SHIPPING_DELIVER_AFTER=STEP,
            AGORA_SHIPPING_CARRIER_POLL="0.2",
        ),
    }
    directory = tmp_path_factory.mktemp("shipping") / "shop"
    with RunningSystem(directory, env=env) as running:
        running.wait_healthy(count=PROCESSES, timeout=STARTUP_BOUND)
        yield running


def test_a_confirmed_order_is_shipped_once_delivered_and_the_shopper_told(shop: Shop) -> None:
    shopper, stranger = shop.shopper(), shop.shopper()
    sku = shop.products(5)[-1]["sku"]
    answer = shopper.place([{"sku": sku, "quantity": 1}], APPROVED)
    assert answer.status_code == 202, answer.text
    order = shopper.wait_until_terminal(answer.json()["id"])
    assert order["status"] == "CONFIRMED", order

    shipments = shopper.wait_until_delivered(order["id"])

    (shipment,) = shipments
    assert shipment["status"] == DELIVERED, shipment
    assert shipment["order_id"] == order["id"]
    assert shipment["destination_country"] == ADDRESS["country"]
    assert shipment["dispatched_at"] is not None
    assert shipment["delivered_at"] is not None
    assert shipment["created_at"] <= shipment["dispatched_at"] <= shipment["delivered_at"]
    alone = shopper.shipment(shipment["id"])
    assert alone.status_code == 200, alone.text
    assert alone.json() == shipment
    # Another shopper learns nothing of it; the admin sees it.
    assert stranger.shipments(order["id"]) == []
    assert stranger.shipment(shipment["id"]).status_code == 404
    assert [s["id"] for s in shop.shipments_of(order["id"])] == [shipment["id"]]

    # The shopper is told it is on its way: one message, about this shipment.
    told = shopper.wait_for_messages(1, kind="shipment_dispatched")
    (on_its_way,) = told
    assert on_its_way["shipment_id"] == shipment["id"], on_its_way
    assert "on its way" in f"{on_its_way['subject']} {on_its_way['body']}".lower(), on_its_way
    assert len([m for m in shopper.messages() if m["kind"] == "shipment_dispatched"]) == 1

    # The console's trace of the checkout holds shipping's handling of the confirmation.
    with open_console(shop.system) as console:

        def with_shipping() -> dict[str, Any] | None:
            trace = checkout_trace(console, order["id"])
            if trace is None or not any(s["service"] == "shipping" for s in trace["spans"]):
                return None
            return trace

        trace = wait_for("shipping's spans in the checkout's trace", with_shipping, timeout=60)
    shipping_spans = [s for s in trace["spans"] if s["service"] == "shipping"]
    assert any(CONFIRMATIONS in s["name"] for s in shipping_spans), shipping_spans
    assert {"gateway", "orders", "shipping"} <= {s["service"] for s in trace["spans"]}

    assert "every invariant holds" in shop.verify()


# --- a malformed confirmation: dead-lettered, fixed, replayed ----------------------------------


def confirmation(order_id: str, user_id: str) -> dict[str, Any]:
    """An OrderConfirmed v2 as orders would publish it, as JSON."""
    event = OrderConfirmedV2(
        order_id=order_id,
        user_id=user_id,
        lines=(OrderLine(sku="SKU-HAND-1", name="Hand-made mug", quantity=1, unit_price=1200),),
        total=1200,
        currency="EUR",
        shipping_address=ShippingAddress(**ADDRESS),
    )
    document: dict[str, Any] = json.loads(
        envelope(event, source="orders", subject=order_id).to_bytes()
    )
    return document


async def publish(system: RunningSystem, document: dict[str, Any]) -> None:
    """Publish ``document`` on the confirmations' subject, as the operator."""
    connection = await nats.connect(system.state()["nats_url"], **system.nats_login())
    try:
        ack = await connection.jetstream().publish(
            CONFIRMATIONS,
            json.dumps(document).encode(),
            headers={"Nats-Msg-Id": document["id"]},
        )
        assert not ack.duplicate
    finally:
        await connection.close()


async def put_in_dead_letters(
    system: RunningSystem, event_id: str, fixed: dict[str, Any], like: DeadLetter
) -> None:
    """What an operator does to replay a corrected event: a copy of the dead letter ``like``
    (its subject and headers) holding ``fixed``, in place of any dead letter of ``event_id``."""
    connection = await nats.connect(system.state()["nats_url"], **system.nats_login())
    try:
        js = connection.jetstream()
        for letter in await dead_letters(js):
            if letter.id == event_id:
                await js.delete_msg(letter.stream, letter.seq)
        headers = {**like.headers, "Nats-Msg-Id": f"{event_id}:fixed:{uuid.uuid4().hex}"}
        await js.publish(
            f"agora.shipping.dead.{like.consumer.removeprefix('shipping__')}",
            json.dumps(fixed).encode(),
            headers=headers,
            stream=stream_name("shipping"),
        )
    finally:
        await connection.close()


async def dead_letter_of(system: RunningSystem, event_id: str) -> DeadLetter | None:
    connection = await nats.connect(system.state()["nats_url"], **system.nats_login())
    try:
        found = [d for d in await dead_letters(connection.jetstream()) if d.id == event_id]
    finally:
        await connection.close()
    return found[0] if found else None


async def settled(system: RunningSystem) -> bool:
    """Whether shipping's consumer of the confirmations has applied everything sent to it."""
    connection = await nats.connect(system.state()["nats_url"], **system.nats_login())
    try:
        info = await connection.jetstream().consumer_info(stream_name("orders"), CONSUMER)
    finally:
        await connection.close()
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


def listed_dead(system: RunningSystem) -> list[dict[str, Any]]:
    """``agora events dead --json``."""
    result = system.agora("events", "dead", "--json")
    assert result.returncode == 0, result.stderr
    letters: list[dict[str, Any]] = json.loads(result.stdout)
    return letters


def test_a_malformed_confirmation_is_dead_lettered_and_a_fixed_copy_replayed_ships_once(
    shop: Shop, system: RunningSystem
) -> None:
    shopper = shop.shopper()
    user_id = shopper.api.get("/api/identity/me", headers=shopper.headers).json()["id"]
    order_id = str(uuid.uuid4())
    fixed = confirmation(order_id, user_id)
    broken = copy.deepcopy(fixed)
    broken["data"]["shipping_address"]["country"] = "gb"  # the contract says ISO, upper case

    asyncio.run(publish(system, broken))

    def dead() -> dict[str, Any] | None:
        return next((d for d in listed_dead(system) if d["id"] == fixed["id"]), None)

    letter = wait_for("shipping to dead-letter the broken confirmation", dead, timeout=60)
    assert letter["service"] == "shipping"
    assert letter["consumer"] == CONSUMER
    assert letter["original_subject"] == CONFIRMATIONS
    assert "shipping_address/country" in letter["error"], letter
    assert shop.shipments_of(order_id) == []
    # The table the operator reads lists it too (its columns fold long ids: not compared here).
    table = system.agora("events", "dead")
    assert table.returncode == 0, table.stderr
    assert "Send one again with `agora events replay ID`." in table.stdout

    kept = asyncio.run(dead_letter_of(system, fixed["id"]))
    assert kept is not None
    # Replayed twice: each time the operator's fixed copy goes to the dead letters, then back.
    for attempt in range(2):
        asyncio.run(put_in_dead_letters(system, fixed["id"], fixed, kept))
        replayed = system.agora("events", "replay", fixed["id"])
        assert replayed.returncode == 0, replayed.stderr
        said = " ".join(replayed.stdout.split())  # rich wraps it at the terminal's width
        told = f"Replayed event {fixed['id']} to {CONFIRMATIONS} (dead-lettered by {CONSUMER})"
        assert told in said, said

        def shipped() -> list[dict[str, Any]] | None:
            if not asyncio.run(settled(system)):
                return None
            items: list[dict[str, Any]] = shopper.shipments(order_id)
            return items or None

        shipments = wait_for(f"replay {attempt + 1} to be applied", shipped, timeout=60)
        assert len(shipments) == 1, shipments
        assert shipments[0]["destination_country"] == "GB"
        assert all(d["id"] != fixed["id"] for d in listed_dead(system))

    assert len(shop.shipments_of(order_id)) == 1
