"""An order placed takes its products out of the shopper's cart, on every store: not a line
set again after the order was placed, not the lines it did not hold, not anyone else's; and the
same order coming again takes nothing more."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from agora_tools.testing import Delivery

from .conftest import BULK, PRESS, WOK, Shop, Shopper

SET = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
PLACED = SET + timedelta(minutes=1)
LATER = PLACED + timedelta(minutes=1)


def test_an_order_takes_its_products_out_of_the_cart(shop: Shop, alice: Shopper) -> None:
    shop.clock.now = SET
    alice.put(WOK, 2)
    alice.put(PRESS, 1)
    alice.put(BULK[0], 4)

    shop.place(alice, WOK, PRESS, placed_at=PLACED)

    assert alice.lines() == {BULK[0]: 4}


def test_a_line_set_again_after_the_order_was_placed_stays(shop: Shop, alice: Shopper) -> None:
    shop.clock.now = SET
    alice.put(WOK, 2)
    alice.put(PRESS, 1)
    # The shopper adds the wok back before the cart has heard of the order.
    shop.clock.now = LATER
    alice.put(WOK, 1)

    shop.place(alice, WOK, PRESS, placed_at=PLACED)

    assert alice.lines() == {WOK: 1}


def test_a_line_set_at_the_moment_the_order_was_placed_goes_with_it(
    shop: Shop, alice: Shopper
) -> None:
    shop.clock.now = PLACED
    alice.put(WOK, 2)

    shop.place(alice, WOK, placed_at=PLACED)

    assert alice.lines() == {}


def placed_then_set_again(shop: Shop, alice: Shopper) -> Delivery:
    """Alice's order of her wok, her press left in the cart, and the wok set again after."""
    shop.clock.now = SET
    alice.put(WOK, 2)
    alice.put(PRESS, 1)
    order = shop.place(alice, WOK, placed_at=PLACED)
    shop.clock.now = LATER
    alice.put(WOK, 3)
    return order


def test_the_same_order_delivered_again_changes_nothing_more(shop: Shop, alice: Shopper) -> None:
    order = placed_then_set_again(shop, alice)

    again = shop.deliver(order.event)

    assert again.handled == ()
    assert alice.lines() == {PRESS: 1, WOK: 3}


def test_the_same_order_handled_twice_takes_nothing_more(shop: Shop, alice: Shopper) -> None:
    """The inbox is passed by: the order comes again as a new event (with Redis, the lines leave
    before the inbox row commits, so a failed commit has the handler run again)."""
    order = placed_then_set_again(shop, alice)

    again = shop.deliver(order.event.model_copy(update={"id": str(uuid.uuid4())}))

    assert again.handled == ("cart__remove_ordered",)
    assert alice.lines() == {PRESS: 1, WOK: 3}


def test_an_order_takes_nothing_from_another_users_cart(
    shop: Shop, alice: Shopper, bob: Shopper
) -> None:
    shop.clock.now = SET
    alice.put(WOK, 2)
    bob.put(WOK, 1)
    bob.put(PRESS, 1)

    shop.place(alice, WOK, PRESS, placed_at=PLACED)

    assert alice.lines() == {}
    assert bob.lines() == {PRESS: 1, WOK: 1}


def test_an_order_of_products_the_cart_does_not_hold_changes_nothing(
    shop: Shop, alice: Shopper
) -> None:
    shop.clock.now = SET
    alice.put(PRESS, 1)

    delivery = shop.place(alice, WOK, placed_at=PLACED)

    assert delivery.handled == ("cart__remove_ordered",)
    assert alice.lines() == {PRESS: 1}
