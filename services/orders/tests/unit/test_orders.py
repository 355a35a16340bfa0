"""An order's rules: prices and total from the catalogue, the card check, the body's fingerprint
and the listing's cursor."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from agora.cursor import InvalidCursor
from contracts import api
from orders.application import CURSORS
from orders.domain import (
    QUANTITY_MAX,
    Address,
    Cursor,
    InvalidCard,
    Line,
    MixedCurrencies,
    Priced,
    ProductUnavailable,
    Requested,
    Status,
    Step,
    card_digits,
    fingerprint,
    luhn,
    price,
)

PRICES = {
    "KIT-WOK-32": Priced("KIT-WOK-32", "Carbon Steel Wok", 5490, "EUR", True),
    "COF-PRESS": Priced("COF-PRESS", "French Press", 3490, "EUR", True),
    "OLD-KETTLE": Priced("OLD-KETTLE", "Old Kettle", 1000, "EUR", False),
    "US-MUG": Priced("US-MUG", "Mug", 900, "USD", True),
}
ADDRESS = Address(
    name="Ada Lovelace", line1="1 Analytical St", city="London", postal_code="N1", country="GB"
)
VISA = "4242 4242 4242 4242"


def test_lines_are_priced_from_the_catalogue_and_summed() -> None:
    lines, total, currency = price([Requested("KIT-WOK-32", 2), Requested("COF-PRESS", 1)], PRICES)

    assert lines == (
        Line("KIT-WOK-32", "Carbon Steel Wok", 2, 5490),
        Line("COF-PRESS", "French Press", 1, 3490),
    )
    assert [line.line_total for line in lines] == [10980, 3490]
    assert total == 14470
    assert currency == "EUR"


@pytest.mark.parametrize("sku", ["NO-SUCH-SKU", "OLD-KETTLE"], ids=["unknown", "inactive"])
def test_a_product_not_for_sale_is_refused_by_its_sku(sku: str) -> None:
    with pytest.raises(ProductUnavailable, match=sku):
        price([Requested("KIT-WOK-32", 1), Requested(sku, 1)], PRICES)


def test_products_in_different_currencies_cannot_share_an_order() -> None:
    with pytest.raises(MixedCurrencies):
        price([Requested("KIT-WOK-32", 1), Requested("US-MUG", 1)], PRICES)


@pytest.mark.parametrize(
    "number", ["4242424242424242", VISA, "5555 5555 5555 4444", "378282246310005"]
)
def test_a_card_number_with_or_without_spaces_gives_its_digits(number: str) -> None:
    assert card_digits(number) == number.replace(" ", "")


@pytest.mark.parametrize(
    "number",
    [
        "",
        "4242-4242-4242-4242",
        "4242424242424241",
        "42424242",
        "4" * 20,
        "\uff14\uff12" * 8,
        "abcd efgh ijkl mnop",
    ],
    ids=["empty", "dashes", "check-digit", "short", "long", "fullwidth", "letters"],
)
def test_a_bad_card_number_is_refused_without_repeating_it(number: str) -> None:
    with pytest.raises(InvalidCard) as refused:
        card_digits(number)

    digits = number.replace(" ", "")
    assert not digits or digits not in str(refused.value)


def test_luhn() -> None:
    assert luhn("79927398713")
    assert not luhn("79927398710")


def test_the_fingerprint_tells_bodies_apart_but_never_holds_the_card_number() -> None:
    lines = [Requested("KIT-WOK-32", 1)]
    same = fingerprint(lines, ADDRESS, VISA)

    assert fingerprint(lines, ADDRESS, VISA.replace(" ", "")) == same
    assert fingerprint([Requested("KIT-WOK-32", 2)], ADDRESS, VISA) != same
    assert fingerprint(lines, ADDRESS, "5555 5555 5555 4444") != same
    assert len(same) == 64
    assert VISA.replace(" ", "") not in same


def token(key: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def test_a_cursor_survives_its_encoding() -> None:
    cursor = Cursor(datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC), "an-order-id")

    assert CURSORS.decode(CURSORS.encode(cursor)) == cursor


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not base64!",
        "WzFd",
        "WyIyMDI2LTExLTI0VDEyOjAwOjAwIiwiYSJd",
        # An id longer than any order's, and a moment no 64-bit clock reaches.
        token(["2026-11-24T12:00:00Z", "x" * 65]),
        token(["99999-01-01T00:00:00Z", "an-order-id"]),
        token([1764000000, "an-order-id"]),
    ],
)
def test_a_cursor_not_handed_out_is_refused(token: str) -> None:
    with pytest.raises(InvalidCursor):
        CURSORS.decode(token)


def test_the_rules_stated_for_the_apis_callers_are_the_orders_own() -> None:
    assert QUANTITY_MAX == api.QUANTITY_MAX
    assert [status.value for status in Status] == [status.value for status in api.OrderStatus]
    assert [step.value for step in Step] == [step.value for step in api.CheckoutStep]
