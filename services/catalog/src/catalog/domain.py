"""The catalogue's rules: what a product and a category are, how a listing is ordered and paged.

Plain Python: no framework, no I/O. Every way a product comes into being (an admin's request, the
seed file) passes through :meth:`Product.create`, and every change through :meth:`Product.change`,
so the rules below hold for every row the catalogue stores.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

SKU_PATTERN = r"^[A-Z0-9-]{3,32}$"
SLUG_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"
NAME_MAX = 200
DESCRIPTION_MAX = 5000
SLUG_MAX = 64
CATEGORY_NAME_MAX = 100
IMAGE_URL_MAX = 2048
# Ten million in major units of a two-decimal currency: far above any shop price, and small
# enough that a sum of a hundred order lines stays inside a signed 64-bit column.
PRICE_MAX = 1_000_000_000
PAGE_DEFAULT = 20
PAGE_MAX = 100

_SKU = re.compile(SKU_PATTERN)
_SLUG = re.compile(SLUG_PATTERN)

# ISO 4217 codes of currencies in circulation (2025). Fund codes (BOV, CHE, USN...), precious
# metals (XAU...), special drawing rights and the testing codes (XTS, XXX) are left out: nothing
# in a shop is priced in them.
_CURRENCY_CODES = """
    AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP
    BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP
    GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES
    KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU
    MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON
    RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND
    TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW
    ZWG
"""
CURRENCIES = frozenset(_CURRENCY_CODES.split())


class InvalidProduct(Exception):
    """Invalid product."""


class UnknownCategory(Exception):
    """Unknown category."""


class ProductNotFound(Exception):
    """Product not found."""


class ProductExists(Exception):
    """Product already exists."""


def check_sku(sku: object) -> str:
    if not isinstance(sku, str) or not _SKU.match(sku):
        raise InvalidProduct("sku must be 3 to 32 characters: upper-case letters, digits and '-'")
    return sku


def check_slug(slug: object) -> str:
    if not isinstance(slug, str) or len(slug) > SLUG_MAX or not _SLUG.match(slug):
        raise InvalidProduct(
            f"category must be a slug of at most {SLUG_MAX} characters: "
            "lower-case words of letters and digits joined by '-'"
        )
    return slug


def check_name(name: object, *, field: str = "name", limit: int = NAME_MAX) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidProduct(f"{field} must be a non-empty string")
    name = name.strip()
    if len(name) > limit:
        raise InvalidProduct(f"{field} must be at most {limit} characters")
    return name


def check_description(description: object) -> str:
    if not isinstance(description, str):
        raise InvalidProduct("description must be a string")
    description = description.strip()
    if len(description) > DESCRIPTION_MAX:
        raise InvalidProduct(f"description must be at most {DESCRIPTION_MAX} characters")
    return description


def check_price(price: object) -> int:
    # bool is an int subclass: True is not a price.
    if not isinstance(price, int) or isinstance(price, bool) or not 0 < price <= PRICE_MAX:
        raise InvalidProduct(
            f"price must be a whole number of minor units between 1 and {PRICE_MAX}"
        )
    return price


def check_currency(currency: object) -> str:
    if not isinstance(currency, str) or currency not in CURRENCIES:
        raise InvalidProduct("currency must be an ISO 4217 code in use, such as EUR")
    return currency


def check_image_url(url: object) -> str | None:
    """An absolute http(s) URL, or a path on the shop's own site (``/static/...``), or nothing."""
    if url is None:
        return None
    message = "image_url must be an http or https URL, or a path starting with '/'"
    if not isinstance(url, str) or not url or len(url) > IMAGE_URL_MAX:
        raise InvalidProduct(message)
    if any(character.isspace() or ord(character) < 32 for character in url):
        raise InvalidProduct(message)
    try:
        parts = urlsplit(url)
    except ValueError as error:
        raise InvalidProduct(message) from error
    site_path = url.startswith("/") and not url.startswith("//")
    absolute = parts.scheme in ("http", "https") and bool(parts.hostname)
    if not (site_path or absolute):
        raise InvalidProduct(message)
    return url


def check_active(active: object) -> bool:
    if not isinstance(active, bool):
        raise InvalidProduct("active must be true or false")
    return active


def name_key(name: str) -> str:
    """What products are ordered by when sorted by name: case does not matter."""
    return name.casefold()


def search_text(name: str, description: str) -> str:
    """What a search word is looked for in: name and description, case folded."""
    return f"{name}\n{description}".casefold()


def search_words(q: str | None) -> tuple[str, ...]:
    """The words of a search; a product matches when each of them is in its name or description."""
    if not q:
        return ()
    return tuple(dict.fromkeys(word.casefold() for word in q.split()))


@dataclass(frozen=True, slots=True)
class Category:
    slug: str
    name: str

    @classmethod
    def create(cls, slug: object, name: object) -> Category:
        return cls(
            slug=check_slug(slug),
            name=check_name(name, field="category name", limit=CATEGORY_NAME_MAX),
        )


@dataclass(frozen=True, slots=True)
class Product:
    sku: str
    name: str
    description: str
    price: int
    currency: str
    category: str
    image_url: str | None
    active: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def create(
        cls,
        *,
        sku: object,
        name: object,
        description: object,
        price: object,
        currency: object,
        category: object,
        image_url: object = None,
        now: datetime,
    ) -> Product:
        """A new product, active from the start."""
        return cls(
            sku=check_sku(sku),
            name=check_name(name),
            description=check_description(description),
            price=check_price(price),
            currency=check_currency(currency),
            category=check_slug(category),
            image_url=check_image_url(image_url),
            active=True,
            created_at=now,
            updated_at=now,
        )

    def change(self, changes: dict[str, Any], *, now: datetime) -> Product:
        """This product with ``changes`` applied; the same product when nothing differs.

        The sku is the product's identity and never changes; nor do the timestamps on request.
        """
        unknown = set(changes) - set(CHECKS)
        if unknown:
            raise InvalidProduct(f"these fields cannot be changed: {', '.join(sorted(unknown))}")
        checked = {field: CHECKS[field](value) for field, value in changes.items()}
        if all(getattr(self, field) == value for field, value in checked.items()):
            return self
        return replace(self, **checked, updated_at=now)


CHECKS: dict[str, Callable[[object], Any]] = {
    "name": check_name,
    "description": check_description,
    "price": check_price,
    "currency": check_currency,
    "category": check_slug,
    "image_url": check_image_url,
    "active": check_active,
}


class Sort(StrEnum):
    """How a listing is ordered. Ties (same name or price) are broken by sku, in the same direction,
    so that one index serves both directions."""

    NAME = "name"
    NAME_DESC = "-name"
    PRICE = "price"
    PRICE_DESC = "-price"

    @property
    def by_price(self) -> bool:
        return self in (Sort.PRICE, Sort.PRICE_DESC)

    @property
    def descending(self) -> bool:
        return self.value.startswith("-")

    def key(self, product: Product) -> str | int:
        return product.price if self.by_price else name_key(product.name)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page starts: after the product with this sort key and sku.

    Keyset paging: a page is "the next ``limit`` products after this one in this order", so pages
    stay stable while products are added or changed elsewhere in the list. The application hands
    it out as an opaque token (agora.cursor); a token whose key breaks the rules below is refused.
    """

    sort: Sort
    key: str | int
    sku: str

    def __post_init__(self) -> None:
        # A key of the other kind would compare a name with a price in the query.
        if isinstance(self.key, int) != self.sort.by_price:
            raise ValueError(f"a listing sorted by {self.sort.value!r} pages by another key")
        if not _SKU.match(self.sku):
            raise ValueError("no product has this sku")

    @classmethod
    def after(cls, product: Product, sort: Sort) -> Cursor:
        return cls(sort=sort, key=sort.key(product), sku=product.sku)
