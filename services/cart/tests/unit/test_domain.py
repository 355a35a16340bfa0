"""The cart's rules: which lines it may hold, how it is priced, what an order takes out of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cart import domain
from cart.domain import (
    LINES_MAX,
    QUANTITY_MAX,
    Cart,
    InvalidQuantity,
    InvalidSku,
    Item,
    Line,
    MixedCurrencies,
    Product,
    ProductNotFound,
    ProductUnavailable,
    TooManyLines,
    check_addable,
    check_quantity,
    check_sku,
    price,
    taken_by_order,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
WOK = Product("KIT-WOK-32", "Carbon Steel Wok 32 cm", 5490, "EUR", True)
PRESS = Product("COF-PRESS", "French Press 1 L", 3490, "EUR", True)
KETTLE = Product("OLD-KETTLE", "Stovetop Kettle", 2590, "EUR", False)
MUG = Product("US-MUG", "Diner Mug", 900, "USD", True)
CATALOGUE = {product.sku: product for product in (WOK, PRESS, KETTLE, MUG)}


def line(product: Product | str, quantity: int = 1, at: datetime = NOW) -> Line:
    return Line(product if isinstance(product, str) else product.sku, quantity, at)


@pytest.mark.parametrize("sku", ["KIT-WOK-32", "ABC", "A" * 32, "123-456"])
def test_a_sku_is_3_to_32_upper_case_letters_digits_and_dashes(sku: str) -> None:
    assert check_sku(sku) == sku


@pytest.mark.parametrize("sku", ["kit-wok", "AB", "A" * 33, "KIT WOK", "KIT_WOK", "", None, 7])
def test_anything_else_is_no_sku(sku: object) -> None:
    with pytest.raises(InvalidSku):
        check_sku(sku)


@pytest.mark.parametrize("quantity", [0, 1, QUANTITY_MAX])
def test_a_quantity_is_0_to_the_most_an_order_line_holds(quantity: int) -> None:
    assert check_quantity(quantity) == quantity


@pytest.mark.parametrize("quantity", [-1, QUANTITY_MAX + 1, True, 2.0, "2", None])
def test_anything_else_is_no_quantity(quantity: object) -> None:
    with pytest.raises(InvalidQuantity):
        check_quantity(quantity)


def test_the_limits_are_those_of_an_order() -> None:
    assert (LINES_MAX, QUANTITY_MAX) == (50, 100)


def test_a_cart_is_priced_from_the_catalogue_in_the_order_its_lines_were_set() -> None:
    cart = price(
        [line(WOK, 2, at=NOW), line(PRESS, at=NOW - timedelta(seconds=1))],
        CATALOGUE,
        currency="GBP",
    )

    assert cart == Cart(
        items=(
            Item(PRESS.sku, 1, PRESS.name, 3490),
            Item(WOK.sku, 2, WOK.name, 5490),
        ),
        total=3490 + 2 * 5490,
        currency="EUR",
    )
    assert [item.line_total for item in cart.items] == [3490, 10980]


def test_lines_set_at_the_same_moment_come_by_sku() -> None:
    cart = price([line(WOK), line(PRESS), line(KETTLE)], CATALOGUE, currency="EUR")

    assert [item.sku for item in cart.items] == [PRESS.sku, WOK.sku, KETTLE.sku]


def test_an_empty_cart_is_shown_in_the_currency_given() -> None:
    assert price([], CATALOGUE, currency="GBP") == Cart((), 0, "GBP")
    assert domain.empty("GBP") == Cart((), 0, "GBP")


def test_a_line_the_catalogue_does_not_know_has_no_name_no_price_and_counts_nothing() -> None:
    cart = price([line(WOK), line("GONE-1", 3)], CATALOGUE, currency="EUR")

    (gone, wok) = cart.items
    assert gone == Item("GONE-1", 3, None, None)
    assert (gone.available, gone.line_total) == (False, None)
    assert wok.available
    assert cart.total == 5490


def test_a_line_no_longer_sold_keeps_its_name_but_has_no_price() -> None:
    cart = price([line(KETTLE, 2)], CATALOGUE, currency="GBP")

    assert cart == Cart((Item(KETTLE.sku, 2, KETTLE.name, None),), 0, "GBP")


def test_a_cart_takes_the_currency_of_its_first_line_for_sale() -> None:
    lines = [
        line(KETTLE, at=NOW),
        line(MUG, at=NOW + timedelta(seconds=1)),
        line(WOK, at=NOW + timedelta(seconds=2)),
    ]

    cart = price(lines, CATALOGUE, currency="GBP")

    assert cart.currency == "USD"
    assert [(item.sku, item.available) for item in cart.items] == [
        (KETTLE.sku, False),
        (MUG.sku, True),
        (WOK.sku, False),
    ]
    assert cart.total == 900


def test_a_product_for_sale_may_join_the_cart() -> None:
    check_addable([line(WOK)], PRESS.sku, CATALOGUE)
    check_addable([line(WOK)], WOK.sku, CATALOGUE)
    check_addable([], MUG.sku, CATALOGUE)


def test_a_product_the_catalogue_does_not_know_may_not() -> None:
    with pytest.raises(ProductNotFound):
        check_addable([], "NO-SUCH", CATALOGUE)


def test_a_product_no_longer_sold_may_not() -> None:
    with pytest.raises(ProductUnavailable):
        check_addable([], KETTLE.sku, CATALOGUE)


def test_a_product_in_another_currency_than_the_cart_may_not() -> None:
    with pytest.raises(MixedCurrencies):
        check_addable([line(WOK)], MUG.sku, CATALOGUE)


def test_the_currency_that_counts_is_that_of_the_other_lines_for_sale() -> None:
    # The mug's own line, or a line no longer sold, says nothing of the cart's currency.
    check_addable([line(MUG)], MUG.sku, CATALOGUE)
    check_addable([line(KETTLE)], MUG.sku, CATALOGUE)


def test_a_full_cart_takes_no_new_line_but_may_change_one_it_has() -> None:
    full = [line(f"BULK-{n:03d}") for n in range(LINES_MAX - 1)] + [line(WOK)]

    check_addable(full, WOK.sku, CATALOGUE)
    with pytest.raises(TooManyLines):
        check_addable(full, PRESS.sku, CATALOGUE)
    check_addable(full[1:], PRESS.sku, CATALOGUE)


def test_an_order_takes_the_lines_set_before_it_was_placed_or_when() -> None:
    earlier = line(WOK, at=NOW - timedelta(seconds=1))
    same_moment = line(PRESS, at=NOW)
    set_again = line(MUG, at=NOW + timedelta(microseconds=1))

    assert taken_by_order([earlier, same_moment, set_again], NOW) == [earlier, same_moment]
