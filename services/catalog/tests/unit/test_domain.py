"""The catalogue's rules, without a database."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from agora.cursor import InvalidCursor, page_size
from catalog.application import CURSORS, read_cursor
from catalog.domain import (
    PAGE_MAX,
    PRICE_MAX,
    Cursor,
    InvalidProduct,
    Product,
    Sort,
    check_currency,
    check_image_url,
    check_price,
    check_sku,
    check_slug,
    search_words,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def a_product(**overrides: object) -> Product:
    fields: dict[str, object] = {
        "sku": "KIT-CHEF-KNIFE-20",
        "name": "Chef's Knife 20 cm",
        "description": "Forged steel.",
        "price": 7990,
        "currency": "EUR",
        "category": "kitchen",
        "image_url": "/static/products/KIT-CHEF-KNIFE-20.svg",
    }
    fields.update(overrides)
    return Product.create(**fields, now=NOW)


@pytest.mark.parametrize("sku", ["ABC", "KIT-CHEF-KNIFE-20", "A1-B2", "X" * 32, "123"])
def test_a_sku_of_upper_case_letters_digits_and_dashes_is_accepted(sku: str) -> None:
    assert check_sku(sku) == sku


@pytest.mark.parametrize(
    "sku", ["AB", "X" * 33, "kit-1", "KIT 1", "KIT_1", "KIT.1", "", "ÄBC", 123, None]
)
def test_a_sku_outside_the_alphabet_or_length_is_refused(sku: object) -> None:
    with pytest.raises(InvalidProduct, match="sku"):
        check_sku(sku)


@pytest.mark.parametrize("price", [1, 7990, PRICE_MAX])
def test_a_price_is_a_positive_whole_number_of_minor_units(price: int) -> None:
    assert check_price(price) == price


@pytest.mark.parametrize("price", [0, -1, PRICE_MAX + 1, 12.5, "12", True, None])
def test_a_price_that_is_not_a_bounded_positive_integer_is_refused(price: object) -> None:
    with pytest.raises(InvalidProduct, match="price"):
        check_price(price)


@pytest.mark.parametrize("currency", ["EUR", "USD", "GBP", "JPY", "CHF"])
def test_an_iso_4217_currency_in_use_is_accepted(currency: str) -> None:
    assert check_currency(currency) == currency


@pytest.mark.parametrize("currency", ["eur", "EURO", "ABC", "XXX", "XTS", "DEM", "", 978])
def test_an_unknown_test_or_withdrawn_currency_is_refused(currency: object) -> None:
    with pytest.raises(InvalidProduct, match="currency"):
        check_currency(currency)


@pytest.mark.parametrize("slug", ["kitchen", "coffee-tea", "a1"])
def test_a_category_slug_is_lower_case_words_joined_by_dashes(slug: str) -> None:
    assert check_slug(slug) == slug


@pytest.mark.parametrize("slug", ["Kitchen", "coffee--tea", "-tea", "tea-", "coffee tea", ""])
def test_a_category_that_is_not_a_slug_is_refused(slug: str) -> None:
    with pytest.raises(InvalidProduct, match="category"):
        check_slug(slug)


@pytest.mark.parametrize(
    "url",
    [
        None,
        "https://cdn.example.com/p/knife.jpg",
        "http://example.com/a.png?size=2",
        "/static/products/KIT-CHEF-KNIFE-20.svg",
    ],
)
def test_an_image_is_an_http_url_or_a_path_on_the_site(url: str | None) -> None:
    assert check_image_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "ftp://example.com/a.png",
        "//evil.example.com/a.png",
        "https://",
        "knife.jpg",
        "https://example.com/a b.png",
        "",
        "https://example.com/" + "a" * 2048,
    ],
)
def test_an_image_url_of_another_scheme_or_shape_is_refused(url: str) -> None:
    with pytest.raises(InvalidProduct, match="image_url"):
        check_image_url(url)


def test_a_new_product_is_active_and_its_name_is_trimmed() -> None:
    product = a_product(name="  Chef's Knife  ")

    assert product.active is True
    assert product.name == "Chef's Knife"
    assert product.created_at == product.updated_at == NOW


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, None])
def test_a_product_needs_a_name_of_at_most_200_characters(name: object) -> None:
    with pytest.raises(InvalidProduct, match="name"):
        a_product(name=name)


def test_a_change_applies_the_given_fields_and_moves_updated_at() -> None:
    product = a_product()
    later = NOW + timedelta(minutes=5)

    changed = product.change({"price": 6990, "active": False}, now=later)

    assert (changed.price, changed.active, changed.name) == (6990, False, product.name)
    assert changed.updated_at == later
    assert changed.created_at == NOW


def test_a_change_to_the_same_values_leaves_the_product_untouched() -> None:
    product = a_product()

    assert product.change({"price": product.price}, now=NOW + timedelta(hours=1)) is product


@pytest.mark.parametrize(
    "changes",
    [
        {"sku": "OTHER-SKU"},
        {"created_at": NOW},
        {"price": -5},
        {"name": None},
        {"active": "no"},
        {"currency": "ABC"},
    ],
)
def test_a_change_of_the_sku_timestamps_or_to_a_bad_value_is_refused(
    changes: dict[str, object],
) -> None:
    with pytest.raises(InvalidProduct):
        a_product().change(changes, now=NOW)


@pytest.mark.parametrize("sort", list(Sort))
def test_a_cursor_survives_its_round_trip(sort: Sort) -> None:
    product = a_product(name="Ärger & Öl")
    cursor = Cursor.after(product, sort)

    token = CURSORS.encode(cursor)

    assert read_cursor(token, sort) == cursor
    # URL-safe without escaping: it travels in a query string.
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_a_cursor_carries_the_sort_key_and_the_sku() -> None:
    product = a_product()

    assert Cursor.after(product, Sort.PRICE_DESC).key == 7990
    assert Cursor.after(product, Sort.NAME).key == "chef's knife 20 cm"
    assert Cursor.after(product, Sort.NAME).sku == "KIT-CHEF-KNIFE-20"


def _token(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


@pytest.mark.parametrize(
    "token",
    [
        "not base64!",
        "YQ",
        _token(b"not json"),
        _token(b'{"a": 1}'),
        _token(b'["price", "cheap", "KIT-1"]'),
        _token(b'["price", true, "KIT-1"]'),
        _token(b'["price", 100, "lower-case"]'),
        _token(b'["price", 100]'),
        # Prices beyond a 64-bit column, and a name where the price should be.
        _token(b'["price", 9223372036854775808, "KIT-1"]'),
        _token(b'["price", -9223372036854775809, "KIT-1"]'),
        _token(b'["name", 100, "KIT-1"]'),
        _token(b'["price", 100, "KIT-1\\u0000"]'),
        _token(b"[[[[[]]]]]"),
        _token("\u00ff\u00fe".encode("latin-1")),
    ],
)
def test_a_cursor_that_was_not_handed_out_is_refused(token: str) -> None:
    with pytest.raises(InvalidCursor):
        read_cursor(token, Sort.PRICE)


def test_a_cursor_is_refused_by_a_listing_in_another_order() -> None:
    token = CURSORS.encode(Cursor.after(a_product(), Sort.PRICE))

    with pytest.raises(InvalidCursor, match="sorted by"):
        read_cursor(token, Sort.NAME)


@pytest.mark.parametrize(("asked", "served"), [(1, 1), (20, 20), (100, 100), (101, 100)])
def test_a_page_size_above_the_maximum_is_clamped(asked: int, served: int) -> None:
    assert page_size(asked, PAGE_MAX) == served
    assert page_size(10**9, PAGE_MAX) == PAGE_MAX


def test_search_words_are_case_folded_and_deduplicated() -> None:
    assert search_words("  Cast IRON cast ") == ("cast", "iron")
    assert search_words("") == ()
    assert search_words(None) == ()
