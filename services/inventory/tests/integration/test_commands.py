"""The checkout's commands, delivered as the consumer delivers them, and inventory's answers in its
outbox: reserve all or nothing, once per order; release; commit; expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from contracts.inventory import ReserveStock, StockLine
from inventory import application
from inventory.adapters import SqlStockrooms

from .conftest import OPENING, TTL, Replica, kinds

KNIFE = "KIT-CHEF-KNIFE-20"
PAN = "KIT-CAST-PAN-28"


async def test_a_reservation_holds_every_line_and_says_until_when(replica: Replica) -> None:
    await replica.reserve("order-1", KIT_CHEF_KNIFE_20=2, KIT_CAST_PAN_28=1)

    (answer,) = await replica.answers("order-1")
    assert answer.type == "inventory.StockReserved.v1"
    assert answer.source == "inventory"
    assert answer.data["lines"] == [
        {"sku": KNIFE, "quantity": 2},
        {"sku": PAN, "quantity": 1},
    ]
    expires_at = datetime.fromisoformat(answer.data["expires_at"])
    assert expires_at - datetime.now(UTC) > TTL - timedelta(minutes=1)
    assert await replica.stock(KNIFE) == (OPENING[KNIFE], 2)
    assert await replica.stock(PAN) == (OPENING[PAN], 1)


async def test_a_short_line_rejects_the_order_and_holds_nothing(replica: Replica) -> None:
    await replica.reserve("order-1", KIT_CHEF_KNIFE_20=1, KIT_CAST_PAN_28=OPENING[PAN] + 1)

    (answer,) = await replica.answers("order-1")
    assert answer.type == "inventory.StockRejected.v1"
    assert answer.data["reason"] == "out_of_stock"
    assert answer.data["shortages"] == [
        {"sku": PAN, "requested": OPENING[PAN] + 1, "available": OPENING[PAN]}
    ]
    assert await replica.stock(KNIFE) == (OPENING[KNIFE], 0)


async def test_an_unknown_or_malformed_sku_is_out_of_stock(replica: Replica) -> None:
    odd = "not a sku, and far longer than any sku can be"
    await replica.bus.publish(
        ReserveStock(
            order_id="order-1",
            lines=(StockLine(sku="NOPE-404", quantity=1), StockLine(sku=odd, quantity=10**12)),
        ),
        aggregate="order-1",
    )

    (answer,) = await replica.answers("order-1")
    assert answer.data["shortages"] == [
        {"sku": "NOPE-404", "requested": 1, "available": 0},
        {"sku": odd, "requested": 10**12, "available": 0},
    ]


async def test_a_redelivered_reserve_is_applied_once(replica: Replica) -> None:
    await replica.reserve("order-1", KIT_CHEF_KNIFE_20=2)

    delivery = await replica.bus.deliver(replica.bus.published[-1])

    assert delivery.handled == ()
    assert kinds(await replica.answers("order-1")) == ["StockReserved"]
    assert await replica.stock(KNIFE) == (OPENING[KNIFE], 2)


async def test_a_reserve_sent_again_gets_the_same_answer_and_takes_nothing_more(
    replica: Replica,
) -> None:
    await replica.reserve("order-1", KIT_CHEF_KNIFE_20=2)
    await replica.reserve("order-1", KIT_CHEF_KNIFE_20=2)

    first, second = await replica.answers("order-1")
    assert kinds([first, second]) == ["StockReserved", "StockReserved"]
    assert first.data == second.data
    assert await replica.stock(KNIFE) == (OPENING[KNIFE], 2)


async def test_releasing_gives_the_units_back_and_refuses_a_later_reserve(
    replica: Replica,
) -> None:
    await replica.reserve("order-1", KIT_CHEF_KNIFE_20=2)
    await replica.release("order-1")
    await replica.reserve("order-1", KIT_CHEF_KNIFE_20=2)

    reserved, released, refused = await replica.answers("order-1")
    assert reserved.type == "inventory.StockReserved.v1"
    assert released.type == "inventory.StockReleased.v1"
    assert released.data["reason"] == "requested"
    assert released.data["lines"] == [{"sku": KNIFE, "quantity": 2}]
    assert (refused.type, refused.data["reason"]) == ("inventory.StockRejected.v1", "released")
    assert await replica.stock(KNIFE) == (OPENING[KNIFE], 0)


async def test_a_release_that_overtakes_its_reserve_keeps_the_reserve_from_taking_stock(
    replica: Replica,
) -> None:
    await replica.release("order-1")
    await replica.reserve("order-1", KIT_CHEF_KNIFE_20=2)

    released, refused = await replica.answers("order-1")
    assert released.data == {"order_id": "order-1", "reason": "requested", "lines": []}
    assert refused.data["reason"] == "released"
    assert await replica.stock(KNIFE) == (OPENING[KNIFE], 0)


async def test_committing_sells_the_units_once(replica: Replica) -> None:
    await replica.reserve("order-1", KIT_CHEF_KNIFE_20=2)
    await replica.commit("order-1")
    await replica.commit("order-1")
    await replica.release("order-1")

    assert kinds(await replica.answers("order-1")) == [
        "StockReserved",
        "StockCommitted",
        "StockCommitted",
    ]
    assert await replica.stock(KNIFE) == (OPENING[KNIFE] - 2, 0)


async def test_an_expired_reservation_is_released_with_an_event(replica: Replica) -> None:
    await replica.reserve("order-1", KIT_CHEF_KNIFE_20=2)
    later = datetime.now(UTC) + TTL + timedelta(seconds=1)

    expired = await replica.uow.run(
        application.expire_reservations, SqlStockrooms(), now=later, limit=10
    )

    assert expired == 1
    _, released = await replica.answers("order-1")
    assert released.type == "inventory.StockReleased.v1"
    assert released.data["reason"] == "expired"
    assert released.data["lines"] == [{"sku": KNIFE, "quantity": 2}]
    assert await replica.stock(KNIFE) == (OPENING[KNIFE], 0)
    assert (
        await replica.uow.run(application.expire_reservations, SqlStockrooms(), now=later, limit=10)
        == 0
    )


async def test_a_commit_after_expiry_sells_what_is_still_available(replica: Replica) -> None:
    await replica.reserve("order-1", KIT_CHEF_KNIFE_20=2)
    later = datetime.now(UTC) + TTL + timedelta(seconds=1)
    await replica.uow.run(application.expire_reservations, SqlStockrooms(), now=later, limit=10)

    await replica.commit("order-1")

    assert kinds(await replica.answers("order-1"))[-1] == "StockCommitted"
    assert await replica.stock(KNIFE) == (OPENING[KNIFE] - 2, 0)


async def test_a_commit_after_expiry_is_refused_when_the_units_are_gone(
    replica: Replica,
) -> None:
    await replica.reserve("order-1", KIT_CHEF_KNIFE_20=2)
    later = datetime.now(UTC) + TTL + timedelta(seconds=1)
    await replica.uow.run(application.expire_reservations, SqlStockrooms(), now=later, limit=10)
    await replica.reserve("order-2", KIT_CHEF_KNIFE_20=OPENING[KNIFE] - 1)

    await replica.commit("order-1")

    refused = (await replica.answers("order-1"))[-1]
    assert refused.type == "inventory.StockRejected.v1"
    assert refused.data["reason"] == "reservation_expired"
    assert await replica.stock(KNIFE) == (OPENING[KNIFE], OPENING[KNIFE] - 1)
