"""The invariants `agora verify` checks, over snapshots built by hand: each one catches what it is
for and stays quiet about a consistent system."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from consistency.checks import check
from consistency.snapshot import (
    Entry,
    Line,
    Message,
    Movement,
    Order,
    Payment,
    Reservation,
    Shipment,
    Snapshot,
    StockRow,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
PAST = NOW - timedelta(minutes=1)
FUTURE = NOW + timedelta(minutes=1)


def order(
    id: str,
    status: str,
    *lines: Line,
    total: int = 1000,
    deadline: datetime = PAST,
    user: str = "u-1",
    updated: datetime = PAST,
) -> Order:
    return Order(id, user, status, "done", total, lines, deadline, updated)


def shipment(id: str, order_id: str, status: str = "label_created", user: str = "u-1") -> Shipment:
    dispatched = PAST if status in {"dispatched", "delivered"} else None
    delivered = PAST if status == "delivered" else None
    return Shipment(id, order_id, user, status, PAST, dispatched, delivered)


def dispatched_message(id: str, shipment_id: str, order_id: str, user: str = "u-1") -> Message:
    return Message(id, user, "shipment_dispatched", order_id, shipment_id)


def movement(id: str, order_id: str, kind: str, amount: int, debit: str, credit: str) -> Movement:
    return Movement(id, order_id, kind, amount, (Entry(debit, amount, 0), Entry(credit, 0, amount)))


def consistent() -> Snapshot:
    """Two orders on one SKU of 20: one sold 2 units for 1000 and delivered, one cancelled."""
    return Snapshot(
        taken_at=NOW,
        orders=(
            order("o-1", "CONFIRMED", Line("SKU-1", 2), total=1000),
            order("o-2", "CANCELLED", Line("SKU-1", 5), total=2500),
        ),
        stock=(StockRow("SKU-1", on_hand=18, reserved=0, seeded=20, adjusted=0),),
        active_reservations=(),
        payments=(Payment("o-1", "captured", 1000, 0), Payment("o-2", "voided", 0, 0)),
        movements=(
            movement("m-1", "o-1", "authorize", 1000, "card_authorizations", "customer_cards"),
            movement("m-2", "o-1", "release", 1000, "customer_cards", "card_authorizations"),
            movement("m-3", "o-1", "capture", 1000, "processor_receivable", "sales"),
            movement("m-4", "o-2", "authorize", 2500, "card_authorizations", "customer_cards"),
            movement("m-5", "o-2", "void", 2500, "customer_cards", "card_authorizations"),
        ),
        users=("u-1", "u-2"),
        messages=(
            Message("n-1", "u-1", "welcome", None),
            Message("n-2", "u-2", "welcome", None),
            Message("n-3", "u-1", "order_confirmed", "o-1"),
            Message("n-4", "u-1", "order_cancelled", "o-2"),
            dispatched_message("n-5", "s-1", "o-1"),
        ),
        shipments=(shipment("s-1", "o-1", "delivered"),),
    )


def without(snapshot: Snapshot, *ids: str) -> tuple[Message, ...]:
    """The snapshot's messages but those ``ids``."""
    return tuple(m for m in snapshot.messages if m.id not in ids)


def problems(snapshot: Snapshot) -> list[str]:
    return [f"{v.check} {v.subject}" for v in check(snapshot).violations]


def test_a_consistent_system_has_no_violation() -> None:
    report = check(consistent())

    assert report.ok
    assert report.counts["confirmed"] == 1
    assert report.counts["cancelled"] == 1
    assert report.counts["shipments"] == 1
    assert report.notes == ()


def test_an_order_pending_past_its_deadline_is_a_violation_but_one_in_progress_is_not() -> None:
    late = replace(consistent(), orders=(*consistent().orders, order("o-3", "PENDING")))
    running = replace(
        consistent(), orders=(*consistent().orders, order("o-3", "PENDING", deadline=FUTURE))
    )

    assert problems(late) == ["order-terminal order o-3"]
    assert problems(running) == []
    assert check(running).in_progress == ("o-3",)


def test_stock_that_does_not_match_the_confirmed_sales_is_a_violation() -> None:
    oversold = replace(
        consistent(), stock=(StockRow("SKU-1", on_hand=17, reserved=0, seeded=20, adjusted=0),)
    )
    adjusted = replace(
        consistent(), stock=(StockRow("SKU-1", on_hand=21, reserved=0, seeded=20, adjusted=3),)
    )

    assert problems(oversold) == ["stock sku SKU-1"]
    assert problems(adjusted) == []


def test_negative_or_over_reserved_stock_is_a_violation() -> None:
    negative = replace(
        consistent(), stock=(StockRow("SKU-1", on_hand=-1, reserved=0, seeded=0, adjusted=1),)
    )
    over = replace(
        consistent(), stock=(StockRow("SKU-1", on_hand=18, reserved=19, seeded=20, adjusted=0),)
    )

    assert "stock sku SKU-1" in problems(negative)
    assert problems(over) == ["stock sku SKU-1"]


def test_the_stock_of_an_order_in_progress_is_not_judged() -> None:
    in_flight = order("o-3", "PENDING", Line("SKU-1", 1), deadline=FUTURE)
    committed_early = replace(
        consistent(),
        orders=(*consistent().orders, in_flight),
        stock=(StockRow("SKU-1", on_hand=17, reserved=0, seeded=20, adjusted=0),),
    )

    assert problems(committed_early) == []


def test_a_reservation_left_for_a_terminal_order_is_a_violation() -> None:
    left = replace(
        consistent(),
        active_reservations=(Reservation("o-2", (Line("SKU-1", 5),)),),
        stock=(StockRow("SKU-1", on_hand=18, reserved=5, seeded=20, adjusted=0),),
    )

    assert problems(left) == ["reservation order o-2"]


def test_money_that_does_not_match_the_outcome_is_a_violation() -> None:
    unpaid = replace(
        consistent(),
        payments=(Payment("o-1", "authorized", 0, 0), Payment("o-2", "voided", 0, 0)),
    )
    charged_for_nothing = replace(
        consistent(),
        payments=(Payment("o-1", "captured", 1000, 0), Payment("o-2", "captured", 2500, 0)),
    )
    refunded = replace(
        consistent(),
        payments=(Payment("o-1", "captured", 1000, 0), Payment("o-2", "refunded", 2500, 2500)),
    )

    assert "money order o-1" in problems(unpaid)
    assert "money order o-2" in problems(charged_for_nothing)
    assert "money order o-2" not in problems(refunded)


def test_two_captures_of_one_order_are_a_violation() -> None:
    twice = replace(
        consistent(),
        movements=(
            *consistent().movements,
            movement("m-6", "o-1", "capture", 1000, "processor_receivable", "sales"),
        ),
    )

    assert "money order o-1" in problems(twice)


def test_an_unbalanced_movement_and_sales_unlike_the_orders_are_violations() -> None:
    lopsided = Movement(
        "m-9",
        "o-1",
        "capture",
        1000,
        (Entry("processor_receivable", 1000, 0), Entry("sales", 0, 900)),
    )
    unbalanced = replace(consistent(), movements=(*consistent().movements[:2], lopsided))

    found = problems(unbalanced)

    assert "ledger movement m-9" in found
    assert "ledger all accounts" in found


def test_a_user_without_a_welcome_or_with_two_is_a_violation() -> None:
    base = consistent()
    missing = replace(base, messages=without(base, "n-1"))
    twice = replace(base, messages=(*base.messages, Message("n-6", "u-2", "welcome", None)))

    assert problems(missing) == ["messages user u-1"]
    assert problems(twice) == ["messages user u-2"]


def test_a_finished_order_needs_exactly_its_one_message_for_its_owner() -> None:
    base = consistent()
    unsaid = replace(base, messages=without(base, "n-4"))
    doubled = replace(
        base, messages=(*base.messages, Message("n-6", "u-1", "order_confirmed", "o-1"))
    )
    wrong_kind = replace(
        base,
        messages=(*without(base, "n-4"), Message("n-4", "u-1", "order_confirmed", "o-2")),
    )
    wrong_user = replace(
        base,
        messages=(*without(base, "n-4"), Message("n-4", "u-2", "order_cancelled", "o-2")),
    )

    assert problems(unsaid) == ["messages order o-2"]
    assert problems(doubled) == ["messages order o-1"]
    assert problems(wrong_kind) == ["messages order o-2"]
    assert problems(wrong_user) == ["messages order o-2"]
    (violation,) = check(unsaid).violations
    assert "exactly one order_cancelled" in violation.detail


def test_messages_about_orders_in_progress_or_unknown_and_for_strangers_are_violations() -> None:
    base = consistent()
    early = replace(
        base,
        orders=(*base.orders, order("o-3", "PENDING", deadline=FUTURE)),
        messages=(*base.messages, Message("n-6", "u-1", "order_confirmed", "o-3")),
    )
    unknown = replace(
        base, messages=(*base.messages, Message("n-6", "u-1", "order_confirmed", "o-9"))
    )
    stranger = replace(base, messages=(*base.messages, Message("n-6", "u-9", "welcome", None)))

    assert problems(early) == ["messages order o-3"]
    assert problems(unknown) == ["messages order o-9"]
    assert problems(stranger) == ["messages message n-6"]


# --- shipping --------------------------------------------------------------------------------


def test_a_system_without_shipping_is_checked_without_it_and_says_so() -> None:
    report = check(replace(consistent(), shipments=None))

    assert report.ok
    assert "shipments" not in report.counts
    assert report.notes == ("shipping is not in the system's topology: no shipment was checked",)


def test_a_confirmed_order_without_its_shipment_past_the_grace_is_a_violation() -> None:
    base = consistent()
    unshipped = replace(base, shipments=(), messages=without(base, "n-5"))

    assert problems(unshipped) == ["shipment order o-1"]
    (violation,) = check(unshipped).violations
    assert "0 shipments" in violation.detail
    assert "exactly one was due within 30 s" in violation.detail


def test_a_confirmed_order_within_the_grace_is_waited_for_not_judged() -> None:
    base = consistent()
    just_confirmed = replace(
        base,
        orders=(
            order("o-1", "CONFIRMED", Line("SKU-1", 2), updated=NOW - timedelta(seconds=10)),
            base.orders[1],
        ),
        shipments=(),
        messages=without(base, "n-5"),
    )

    report = check(just_confirmed)

    assert report.ok
    assert report.awaiting_shipment == ("o-1",)
    assert report.notes == (
        "1 CONFIRMED order(s) without a shipment yet, within the 30 s a shipment may take: "
        "not judged",
    )
    assert problems(replace(just_confirmed, taken_at=NOW + timedelta(seconds=21))) == [
        "shipment order o-1"
    ]
    shorter = check(just_confirmed, shipment_grace=timedelta(seconds=5))
    assert [f"{v.check} {v.subject}" for v in shorter.violations] == ["shipment order o-1"]
    assert shorter.awaiting_shipment == ()


def test_two_shipments_of_one_order_are_a_violation_even_within_the_grace() -> None:
    base = consistent()
    twice = replace(
        base,
        orders=(order("o-1", "CONFIRMED", Line("SKU-1", 2), updated=NOW), base.orders[1]),
        shipments=(*(base.shipments or ()), shipment("s-2", "o-1")),
    )

    assert problems(twice) == ["shipment order o-1"]
    (violation,) = check(twice).violations
    assert "2 shipments (s-1, s-2)" in violation.detail


def test_a_shipment_still_active_for_a_cancelled_order_is_a_violation() -> None:
    base = consistent()
    active = replace(base, shipments=(*(base.shipments or ()), shipment("s-2", "o-2")))
    called_off = replace(
        base, shipments=(*(base.shipments or ()), shipment("s-2", "o-2", "cancelled"))
    )

    assert problems(active) == ["shipment-cancelled shipment s-2"]
    (violation,) = check(active).violations
    assert violation.detail == "label_created for order o-2, which is CANCELLED"
    assert problems(called_off) == []


def test_a_shipment_of_an_order_orders_does_not_know_or_has_not_confirmed_is_a_violation() -> None:
    base = consistent()
    orphan = replace(base, shipments=(*(base.shipments or ()), shipment("s-9", "o-9")))
    early = replace(
        base,
        orders=(*base.orders, order("o-3", "PENDING", deadline=FUTURE)),
        shipments=(*(base.shipments or ()), shipment("s-3", "o-3")),
    )

    assert problems(orphan) == ["shipment-order shipment s-9"]
    assert "o-9, which orders does not know" in check(orphan).violations[0].detail
    assert problems(early) == ["shipment-order shipment s-3"]


def test_a_dispatched_shipment_needs_exactly_one_message_for_its_owner() -> None:
    base = consistent()
    unsaid = replace(base, messages=without(base, "n-5"))
    doubled = replace(base, messages=(*base.messages, dispatched_message("n-6", "s-1", "o-1")))
    wrong_user = replace(
        base, messages=(*without(base, "n-5"), dispatched_message("n-5", "s-1", "o-1", "u-2"))
    )
    not_yet = replace(
        base, shipments=(shipment("s-1", "o-1", "label_created"),), messages=unsaid.messages
    )

    assert problems(unsaid) == ["shipment-message shipment s-1"]
    assert "0 shipment_dispatched messages" in check(unsaid).violations[0].detail
    assert problems(doubled) == ["shipment-message shipment s-1"]
    assert problems(wrong_user) == ["shipment-message shipment s-1"]
    assert problems(not_yet) == []


def test_a_dispatch_message_about_a_shipment_shipping_does_not_know_is_a_violation() -> None:
    base = consistent()
    unknown = replace(base, messages=(*base.messages, dispatched_message("n-6", "s-9", "o-1")))

    assert problems(unknown) == ["shipment-message message n-6"]


def test_the_order_messages_leave_the_dispatch_messages_to_the_shipment_check() -> None:
    """o-1's dispatch message is no second message about its end, and does not stand in for
    its order_confirmed either."""
    base = consistent()
    only_dispatched = replace(base, messages=without(base, "n-3"))

    assert problems(base) == []
    assert problems(only_dispatched) == ["messages order o-1"]
    assert problems(replace(only_dispatched, shipments=None)) == ["messages order o-1"]
