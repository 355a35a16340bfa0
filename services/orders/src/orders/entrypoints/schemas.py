"""What orders' routes read and answer: the Idempotency-Key header, the bodies, the query of
a listing, and an order as the API shows it.

The card number is read here and checked; the routes hand it to payments for a token and drop
it: it is in no answer, no log line and no row. Validation answers name the field, never its
value.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Header
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from agora.cursor import PageOut
from agora.errors import Problem
from agora.fields import WholeNumber
from agora.query import QueryParams, page_cursor, page_limit
from contracts.api import IDEMPOTENCY_KEY_MAX
from orders.domain import (
    COUNTRY_PATTERN,
    LINES_MAX,
    PAGE_DEFAULT,
    PAGE_MAX,
    QUANTITY_MAX,
    SKU_PATTERN,
    InvalidCard,
    Order,
    Reason,
    Status,
    Step,
    card_digits,
)


class IdempotencyKeyRequired(Problem, status=400, title="Idempotency-Key required"):
    """Placing an order needs an ``Idempotency-Key`` header."""


class InvalidIdempotencyKey(Problem, status=400, title="Invalid Idempotency-Key"):
    """The ``Idempotency-Key`` is not one the service accepts."""


async def idempotency_key(
    # Documented by the route (required); read here as optional so a missing one is our 400.
    key: Annotated[str | None, Header(alias="Idempotency-Key", include_in_schema=False)] = None,
) -> str:
    if key is None or not key.strip():
        raise IdempotencyKeyRequired(
            "placing an order needs an Idempotency-Key header: a new unique value per order"
        )
    if len(key) > IDEMPOTENCY_KEY_MAX or not key.isprintable():
        raise InvalidIdempotencyKey(
            f"the Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} printable characters"
        )
    return key


# The printable characters a header's value can carry (ISO 8859-1 but the controls, the no-break
# space and the soft hyphen), not starting or ending with a space: what ``idempotency_key`` takes.
_PRINTABLE = "!-~\u00a1-\u00ac\u00ae-\u00ff"
IDEMPOTENCY_KEY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": "A new unique value per order (1 to 200 printable characters): the same "
    "key again, with the same body, returns the same order.",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": IDEMPOTENCY_KEY_MAX,
        "pattern": f"^[{_PRINTABLE}](?:[ {_PRINTABLE}]*[{_PRINTABLE}])?$",
    },
}

Key = Annotated[str, Depends(idempotency_key)]


def _plain(value: str | None) -> str | None:
    if value is not None and any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("control characters are not allowed")
    return value


# 12 to 19 digits, and spaces anywhere (``card_digits`` takes them out).
CARD_NUMBER_PATTERN = r"^ *(?:[0-9] *){12,19}$"


class LineIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    sku: str = Field(pattern=SKU_PATTERN)
    quantity: WholeNumber = Field(ge=1, le=QUANTITY_MAX)


class AddressIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100)
    line1: str = Field(min_length=1, max_length=200)
    line2: str | None = Field(default=None, max_length=200)
    city: str = Field(min_length=1, max_length=100)
    postal_code: str = Field(min_length=1, max_length=20)
    country: str = Field(pattern=COUNTRY_PATTERN, description="ISO 3166-1 alpha-2, upper case.")

    @field_validator("name", "line1", "line2", "city", "postal_code")
    @classmethod
    def _no_control_characters(cls, value: str | None) -> str | None:
        return _plain(value)

    @field_validator("line2")
    @classmethod
    def _empty_is_absent(cls, value: str | None) -> str | None:
        return value or None


class NewOrder(BaseModel):
    """An order as a customer places it. Prices come from the catalogue, not from here."""

    model_config = ConfigDict(extra="forbid", strict=True)

    lines: list[LineIn] | None = Field(
        default=None,
        min_length=1,
        max_length=LINES_MAX,
        description="Leave out to order what the cart holds (an empty cart is 422).",
    )
    shipping_address: AddressIn
    card_number: str = Field(
        max_length=64,
        description="12 to 19 digits passing the Luhn check, spaces allowed; it is never stored.",
        json_schema_extra={"pattern": CARD_NUMBER_PATTERN},
    )

    @field_validator("card_number")
    @classmethod
    def _card(cls, value: str) -> str:
        try:
            card_digits(value)
        except InvalidCard as error:
            raise ValueError(str(error)) from None
        return value

    @model_validator(mode="after")
    def _one_line_per_sku(self) -> NewOrder:
        skus = [line.sku for line in self.lines or ()]
        if len(set(skus)) != len(skus):
            raise ValueError("each sku may appear on one line only")
        return self


class LineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sku: str
    name: str
    quantity: int
    unit_price: int = Field(description="Minor units of the order's currency.")
    line_total: int


class AddressOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    line1: str
    line2: str | None
    city: str
    postal_code: str
    country: str


class CheckoutOut(BaseModel):
    step: Step
    attempts: int = Field(description="Sends of the current step's command(s) so far.")


class OrderOut(BaseModel):
    id: str
    user_id: str
    status: Status
    reason: Reason | None = Field(description="Why it was cancelled; null unless CANCELLED.")
    lines: list[LineOut]
    total: int = Field(description="Minor units of `currency`.")
    currency: str
    shipping_address: AddressOut
    card_brand: str
    card_last4: str
    placed_at: datetime
    updated_at: datetime
    deadline_at: datetime = Field(description="By then the order should be CONFIRMED or CANCELLED.")
    trace_id: str | None = Field(description="The checkout's trace.")
    checkout: CheckoutOut


class OrderPage(PageOut[OrderOut]):
    pass


class ListQuery(QueryParams):
    status: Status | None = None
    limit: int = page_limit(PAGE_DEFAULT, PAGE_MAX, clamped=False)
    cursor: str | None = page_cursor()


ORDER = TypeAdapter(OrderOut)
PAGE = TypeAdapter(OrderPage)


def out(order: Order) -> OrderOut:
    """``order`` as the API shows it: the card by its brand and last four, never its token."""
    return OrderOut(
        id=order.id,
        user_id=order.user_id,
        status=order.status,
        reason=order.reason,
        lines=[LineOut.model_validate(line) for line in order.lines],
        total=order.total,
        currency=order.currency,
        shipping_address=AddressOut.model_validate(order.shipping_address),
        card_brand=order.card.brand,
        card_last4=order.card.last4,
        placed_at=order.placed_at,
        updated_at=order.updated_at,
        deadline_at=order.deadline_at,
        trace_id=order.trace_id,
        checkout=CheckoutOut(step=order.checkout.step, attempts=order.checkout.attempt),
    )
