"""Inventory's rules, as the checkout sees them: what each command answers and what it holds."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from agora.cursor import InvalidCursor, page_size
from inventory import domain
from inventory.application import CURSORS, read_cursor
from inventory.domain import (
    PAGE_MAX,
    Committed,
    Cursor,
    InvalidAdjustment,
    InvalidOrder,
    Line,
    NotEnoughStock,
    Rejected,
    Released,
    Reservation,
    Reserved,
    Shortage,
    Status,
    Stock,
    Stockroom,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TTL = timedelta(minutes=15)
LATER = NOW + TTL + timedelta(seconds=1)


def stocked(**quantities: int) -> Stockroom:
    """A stockroom with these SKUs (``KIT_PAN=3`` is sku KIT-PAN) and these units on hand."""
    return Stockroom(
        Stock.open(sku.replace("_", "-")).seed(quantity) for sku, quantity in quantities.items()
    )


def reserved(room: Stockroom, order_id: str, *lines: Line) -> Reservation:
    outcome = domain.reserve(room, None, order_id, lines, now=NOW, ttl=TTL)
    assert isinstance(outcome.answer, Reserved)
    assert outcome.reservation is not None
    return outcome.reservation


def test_a_reservation_holds_every_line_until_its_deadline() -> None:
    room = stocked(KIT_PAN=5, BK_DDIA=2)

    outcome = domain.reserve(
        room, None, "o-1", [Line("KIT-PAN", 3), Line("BK-DDIA", 2)], now=NOW, ttl=TTL
    )

    assert outcome.answer == Reserved(outcome.reservation)  # type: ignore[arg-type]
    assert outcome.reservation is not None
    assert outcome.reservation.status is Status.ACTIVE
    assert outcome.reservation.expires_at == NOW + TTL
    assert (room["KIT-PAN"].available, room["KIT-PAN"].on_hand) == (2, 5)
    assert room["BK-DDIA"].available == 0


def test_one_short_line_refuses_the_whole_order_and_holds_nothing() -> None:
    room = stocked(KIT_PAN=5, BK_DDIA=1)

    outcome = domain.reserve(
        room, None, "o-1", [Line("KIT-PAN", 3), Line("BK-DDIA", 2)], now=NOW, ttl=TTL
    )

    assert outcome.reservation is None
    assert outcome.answer == Rejected("o-1", "out_of_stock", (Shortage("BK-DDIA", 2, 1),))
    assert room.changed() == []
    assert room["KIT-PAN"].available == 5


def test_a_sku_inventory_does_not_know_counts_as_none_available() -> None:
    room = stocked(KIT_PAN=5)

    outcome = domain.reserve(room, None, "o-1", [Line("NOPE-1", 1)], now=NOW, ttl=TTL)

    assert outcome.answer == Rejected("o-1", "out_of_stock", (Shortage("NOPE-1", 1, 0),))


def test_lines_of_one_sku_are_added_up_before_they_are_checked() -> None:
    room = stocked(KIT_PAN=4)

    outcome = domain.reserve(
        room, None, "o-1", [Line("KIT-PAN", 3), Line("KIT-PAN", 2)], now=NOW, ttl=TTL
    )

    assert outcome.answer == Rejected("o-1", "out_of_stock", (Shortage("KIT-PAN", 5, 4),))


def test_a_line_for_more_units_than_any_stock_can_count_is_no_order() -> None:
    room = stocked(KIT_PAN=5)
    lines = [Line("KIT-PAN", 2**62), Line("KIT-PAN", 2**62)]

    with pytest.raises(InvalidOrder):
        domain.reserve(room, None, "o-1", lines, now=NOW, ttl=TTL)
    assert room.changed() == []


@pytest.mark.parametrize("status", [Status.ACTIVE, Status.COMMITTED])
def test_reserving_again_answers_with_the_same_reservation_and_takes_nothing(
    status: Status,
) -> None:
    room = stocked(KIT_PAN=5)
    first = reserved(room, "o-1", Line("KIT-PAN", 2)).becomes(status, now=NOW)
    room = stocked(KIT_PAN=5)

    again = domain.reserve(room, first, "o-1", [Line("KIT-PAN", 2)], now=LATER, ttl=TTL)

    assert again == (None, Reserved(first))
    assert room.changed() == []


@pytest.mark.parametrize("status", [Status.RELEASED, Status.EXPIRED])
def test_reserving_after_a_release_or_an_expiry_is_refused(status: Status) -> None:
    room = stocked(KIT_PAN=5)
    gone = reserved(room, "o-1", Line("KIT-PAN", 2)).becomes(status, now=NOW)

    again = domain.reserve(room, gone, "o-1", [Line("KIT-PAN", 2)], now=NOW, ttl=TTL)

    assert again == (None, Rejected("o-1", "released"))


def test_a_release_before_the_reservation_refuses_the_late_reservation() -> None:
    room = stocked(KIT_PAN=5)

    release = domain.release(room, None, "o-1", now=NOW)
    late = domain.reserve(room, release.reservation, "o-1", [Line("KIT-PAN", 1)], now=NOW, ttl=TTL)

    assert release.answer == Released("o-1", "requested", ())
    assert release.reservation is not None
    assert release.reservation.status is Status.RELEASED
    assert release.reservation.lines == ()
    assert late == (None, Rejected("o-1", "released"))
    assert room["KIT-PAN"].available == 5


def test_releasing_a_committed_order_undoes_no_sale_and_answers_nothing() -> None:
    room = stocked(KIT_PAN=5)
    sold = domain.commit(room, reserved(room, "o-1", Line("KIT-PAN", 3)), "o-1", now=NOW)
    assert sold.reservation is not None

    assert domain.release(room, sold.reservation, "o-1", now=NOW) == (None, None)
    assert (room["KIT-PAN"].on_hand, room["KIT-PAN"].reserved) == (2, 0)


@pytest.mark.parametrize(
    ("settle", "answer", "status", "stock"),
    [
        pytest.param(
            domain.release,
            Released("o-1", "requested", (Line("KIT-PAN", 3),)),
            Status.RELEASED,
            (5, 0, 5),
            id="releasing-gives-the-units-back",
        ),
        pytest.param(
            domain.commit,
            Committed("o-1", (Line("KIT-PAN", 3),)),
            Status.COMMITTED,
            (2, 0, 2),
            id="committing-sells-the-held-units",
        ),
    ],
)
def test_settling_a_reservation_happens_once(
    settle: Callable[..., domain.Outcome],
    answer: Released | Committed,
    status: Status,
    stock: tuple[int, int, int],
) -> None:
    room = stocked(KIT_PAN=5)
    held = reserved(room, "o-1", Line("KIT-PAN", 3))

    first = settle(room, held, "o-1", now=NOW)
    assert first.reservation is not None
    second = settle(room, first.reservation, "o-1", now=NOW)

    assert first.answer == answer
    assert first.reservation.status is status
    assert second == (None, first.answer)
    pan = room["KIT-PAN"]
    assert (pan.on_hand, pan.reserved, pan.available) == stock


def test_a_reservation_not_committed_in_time_expires_and_gives_its_units_back() -> None:
    room = stocked(KIT_PAN=5)
    held = reserved(room, "o-1", Line("KIT-PAN", 3))

    assert domain.expire(room, held, now=NOW + TTL - timedelta(seconds=1)) == (None, None)
    expired = domain.expire(room, held, now=LATER)

    assert expired.answer == Released("o-1", "expired", (Line("KIT-PAN", 3),))
    assert expired.reservation is not None
    assert expired.reservation.status is Status.EXPIRED
    assert room["KIT-PAN"].available == 5
    assert domain.expire(room, expired.reservation, now=LATER) == (None, None)


def test_a_commit_after_expiry_takes_the_units_when_they_are_still_there() -> None:
    room = stocked(KIT_PAN=5)
    expired = domain.expire(room, reserved(room, "o-1", Line("KIT-PAN", 3)), now=LATER)
    assert expired.reservation is not None

    late = domain.commit(room, expired.reservation, "o-1", now=LATER)

    assert late.answer == Committed("o-1", (Line("KIT-PAN", 3),))
    assert (room["KIT-PAN"].on_hand, room["KIT-PAN"].reserved) == (2, 0)


def test_a_commit_after_expiry_is_refused_when_the_units_went_to_others() -> None:
    room = stocked(KIT_PAN=5)
    expired = domain.expire(room, reserved(room, "o-1", Line("KIT-PAN", 3)), now=LATER)
    assert expired.reservation is not None
    reserved(room, "o-2", Line("KIT-PAN", 4))

    late = domain.commit(room, expired.reservation, "o-1", now=LATER)

    assert late == (
        None,
        Rejected("o-1", "reservation_expired", (Shortage("KIT-PAN", 3, 1),)),
    )
    assert (room["KIT-PAN"].on_hand, room["KIT-PAN"].reserved) == (5, 4)


def test_a_commit_without_a_reservation_is_refused() -> None:
    room = stocked(KIT_PAN=5)
    tombstone = domain.release(room, None, "o-2", now=NOW).reservation

    assert domain.commit(room, None, "o-1", now=NOW) == (
        None,
        Rejected("o-1", "reservation_expired"),
    )
    assert domain.commit(room, tombstone, "o-2", now=NOW) == (None, Rejected("o-2", "released"))
    assert room.changed() == []


def test_stock_never_goes_negative_nor_below_what_orders_hold() -> None:
    row = Stock.open("KIT-PAN").seed(5).hold(3)

    with pytest.raises(NotEnoughStock):
        row.adjust(-3)
    with pytest.raises(NotEnoughStock):
        row.hold(3)
    with pytest.raises(NotEnoughStock):
        row.take(3)
    with pytest.raises(NotEnoughStock):
        row.release(4)
    with pytest.raises(NotEnoughStock):
        Stock.open("KIT-PAN").adjust(-1)
    assert row.adjust(-2) == Stock("KIT-PAN", on_hand=3, reserved=3, seeded=5, adjusted=-2)


@pytest.mark.parametrize("delta", [0, 1_000_001, -1_000_001])
def test_an_adjustment_is_a_non_zero_bounded_delta(delta: int) -> None:
    with pytest.raises(InvalidAdjustment):
        Stock.open("KIT-PAN").seed(5).adjust(delta)


def test_the_opening_quantity_is_given_once_and_added_to_what_is_there() -> None:
    opened = Stock.open("KIT-PAN").adjust(2)

    seeded = opened.seed(20)

    assert (seeded.on_hand, seeded.seeded, seeded.adjusted) == (22, 20, 2)
    assert seeded.seed(50) == seeded


def test_a_cursor_is_read_back_only_by_the_listing_it_was_made_for() -> None:
    token = CURSORS.encode(Cursor("stock", "KIT-PAN"))

    assert read_cursor(token, "stock") == Cursor("stock", "KIT-PAN")
    with pytest.raises(InvalidCursor):
        read_cursor(token, "reservations")
    # ["stock", ""] and [1, 2]
    for bad in ["", "not-base64!", "WyJzdG9jayIsIiJd", "WzEsMl0"]:
        with pytest.raises(InvalidCursor):
            read_cursor(bad, "stock")


def test_a_page_above_the_largest_is_served_as_the_largest() -> None:
    assert page_size(1, PAGE_MAX) == 1
    assert page_size(10_000, PAGE_MAX) == 500
    with pytest.raises(ValueError, match="at least one"):
        page_size(0, PAGE_MAX)
