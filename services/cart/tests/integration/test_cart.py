"""A shopper's cart through the API, on every store: lines set, changed and removed, priced by
the catalogue each time the cart is shown, and never anyone else's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from agora_tools.testing import assert_problem
from cart.domain import Product

from .conftest import BULK, KETTLE, MUG, PRESS, WOK, Shop, Shopper

EMPTY = {"items": [], "total": 0, "currency": "EUR"}
FIRST = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


def item(sku: str, name: str, quantity: int, unit_price: int) -> dict[str, Any]:
    return {
        "sku": sku,
        "name": name,
        "quantity": quantity,
        "unit_price": unit_price,
        "line_total": unit_price * quantity,
        "available": True,
    }


def put_a_second_apart(shop: Shop, shopper: Shopper, *lines: tuple[str, int]) -> httpx.Response:
    """Set each of ``lines`` one second after the one before, the first at ``FIRST``, so that
    they are shown in this order; the answer to the last."""
    answers = []
    for seconds, (sku, quantity) in enumerate(lines):
        shop.clock.now = FIRST + seconds * SECOND
        answers.append(shopper.put(sku, quantity))
    return answers[-1]


def test_a_new_cart_is_empty_and_priced_in_the_default_currency(shop: Shop, alice: Shopper) -> None:
    answer = alice.cart()

    assert answer.status_code == 200
    assert answer.json() == EMPTY
    assert shop.catalogue.calls == []


def test_a_line_set_is_priced_from_the_catalogue(alice: Shopper) -> None:
    answer = alice.put(WOK, 2)

    expected = {
        "items": [item(WOK, "Carbon Steel Wok 32 cm", 2, 5490)],
        "total": 10980,
        "currency": "EUR",
    }
    assert answer.status_code == 200, answer.text
    assert answer.json() == expected
    assert alice.cart().json() == expected


def test_lines_are_shown_in_the_order_they_were_set_and_added_up(
    shop: Shop, alice: Shopper
) -> None:
    answer = put_a_second_apart(shop, alice, (WOK, 1), (PRESS, 1), (WOK, 2))

    assert answer.json() == {
        "items": [
            item(PRESS, "French Press 1 L", 1, 3490),
            item(WOK, "Carbon Steel Wok 32 cm", 2, 5490),
        ],
        "total": 3490 + 2 * 5490,
        "currency": "EUR",
    }
    assert alice.cart().json() == answer.json()


def test_setting_a_line_again_sets_its_quantity(alice: Shopper) -> None:
    alice.put(WOK, 2)

    answer = alice.put(WOK, 5)

    assert answer.status_code == 200
    assert alice.lines() == {WOK: 5}
    assert answer.json()["total"] == 5 * 5490


def test_a_quantity_of_zero_removes_the_line(alice: Shopper) -> None:
    alice.put(WOK, 2)
    alice.put(PRESS, 1)

    answer = alice.put(WOK, 0)
    again = alice.put(WOK, 0)

    assert answer.status_code == again.status_code == 200
    assert [line["sku"] for line in answer.json()["items"]] == [PRESS]
    assert answer.json()["total"] == 3490
    assert alice.lines() == {PRESS: 1}


def test_a_line_removed_is_gone_and_removing_it_again_is_no_error(alice: Shopper) -> None:
    alice.put(WOK, 2)
    alice.put(PRESS, 1)

    removed = alice.remove(WOK)
    again = alice.remove(WOK)

    assert removed.status_code == again.status_code == 200
    assert removed.json() == again.json()
    assert [line["sku"] for line in removed.json()["items"]] == [PRESS]
    assert alice.lines() == {PRESS: 1}


def test_removing_the_last_line_leaves_an_empty_cart(alice: Shopper) -> None:
    alice.put(WOK, 2)

    assert alice.remove(WOK).json() == EMPTY


def test_emptying_the_cart_removes_every_line(alice: Shopper) -> None:
    alice.put(WOK, 2)
    alice.put(PRESS, 1)

    answer = alice.empty()

    assert answer.status_code == 200
    assert answer.json() == EMPTY
    assert alice.cart().json() == EMPTY
    assert alice.empty().json() == EMPTY


def test_an_sku_the_catalogue_does_not_know_is_a_404_and_changes_nothing(
    alice: Shopper,
) -> None:
    alice.put(WOK, 1)

    answer = alice.put("NO-SUCH-THING", 1)

    assert_problem(answer, 404)
    assert answer.json()["title"] == "Product not found"
    assert alice.lines() == {WOK: 1}


def test_a_product_no_longer_sold_cannot_be_added(alice: Shopper) -> None:
    answer = alice.put(KETTLE, 1)

    assert answer.status_code == 422
    assert answer.json()["type"] == "/problems/product-unavailable"
    assert alice.lines() == {}


def test_a_cart_is_priced_in_one_currency(alice: Shopper, bob: Shopper) -> None:
    alice.put(WOK, 1)

    mixed = alice.put(MUG, 1)
    alone = bob.put(MUG, 2)

    assert mixed.status_code == 422
    assert mixed.json()["type"] == "/problems/mixed-currencies"
    assert alice.lines() == {WOK: 1}
    assert (alone.json()["currency"], alone.json()["total"]) == ("USD", 1800)


def test_a_cart_holds_at_most_fifty_lines(alice: Shopper) -> None:
    for sku in BULK[:50]:
        assert alice.put(sku, 1).status_code == 200

    refused = alice.put(BULK[50], 1)
    changed = alice.put(BULK[0], 3)
    alice.remove(BULK[1])
    fits_again = alice.put(BULK[50], 1)

    assert_problem(refused, 422)
    assert refused.json()["title"] == "Too many lines"
    assert changed.status_code == fits_again.status_code == 200
    lines = alice.lines()
    assert len(lines) == 50
    assert (lines[BULK[0]], BULK[1] in lines, BULK[50] in lines) == (3, False, True)


def test_a_line_the_catalogue_no_longer_knows_is_shown_without_a_price(
    shop: Shop, alice: Shopper
) -> None:
    put_a_second_apart(shop, alice, (WOK, 2), (PRESS, 1))
    del shop.catalogue.known[PRESS]

    answer = alice.cart()

    assert answer.status_code == 200
    assert answer.json() == {
        "items": [
            item(WOK, "Carbon Steel Wok 32 cm", 2, 5490),
            {
                "sku": PRESS,
                "name": None,
                "quantity": 1,
                "unit_price": None,
                "line_total": None,
                "available": False,
            },
        ],
        "total": 10980,
        "currency": "EUR",
    }
    assert alice.remove(PRESS).json()["items"] == [item(WOK, "Carbon Steel Wok 32 cm", 2, 5490)]


def test_a_line_whose_product_stopped_selling_keeps_its_name_but_no_price(
    shop: Shop, alice: Shopper
) -> None:
    alice.put(WOK, 2)
    alice.put(PRESS, 1)
    shop.catalogue.known[WOK] = Product(WOK, "Carbon Steel Wok 32 cm", 5490, "EUR", False)

    items = {item["sku"]: item for item in alice.cart().json()["items"]}
    press, wok = items[PRESS], items[WOK]

    assert (wok["name"], wok["unit_price"], wok["available"]) == (
        "Carbon Steel Wok 32 cm",
        None,
        False,
    )
    assert alice.cart().json()["total"] == press["line_total"] == 3490


def test_the_catalogue_is_asked_once_each_time_the_cart_is_shown_or_changed(
    shop: Shop, alice: Shopper
) -> None:
    alice.put(WOK, 1)
    alice.put(PRESS, 1)
    shop.catalogue.calls.clear()

    alice.cart()
    alice.put(BULK[0], 1)
    alice.remove(PRESS)

    assert shop.catalogue.calls == [
        [PRESS, WOK],
        [BULK[0], PRESS, WOK],
        [BULK[0], WOK],
    ]


def test_two_users_never_see_or_change_each_others_cart(alice: Shopper, bob: Shopper) -> None:
    alice.put(WOK, 2)
    bob.put(PRESS, 1)

    bob.put(WOK, 7)
    bob.remove(WOK)
    alice.remove(PRESS)
    bob.empty()

    assert alice.lines() == {WOK: 2}
    assert bob.lines() == {}


def test_when_the_catalogue_is_down_the_cart_is_a_503_and_nothing_changes(
    shop: Shop, alice: Shopper
) -> None:
    alice.put(WOK, 2)
    alice.put(PRESS, 1)
    shop.catalogue.down = True

    answers = [alice.cart(), alice.put(BULK[0], 1), alice.put(WOK, 5), alice.remove(PRESS)]

    for answer in answers:
        assert_problem(answer, 503)
        assert "catalogue" in answer.json()["detail"]
    shop.catalogue.down = False
    assert alice.lines() == {PRESS: 1, WOK: 2}


def test_the_cart_can_be_emptied_while_the_catalogue_is_down(shop: Shop, alice: Shopper) -> None:
    alice.put(WOK, 2)
    shop.catalogue.down = True

    answer = alice.empty()

    assert answer.status_code == 200
    assert answer.json() == EMPTY
    shop.catalogue.down = False
    assert alice.lines() == {}
