"""Cart's entry points: the routes of the caller's own cart, and the subscription that takes what
they ordered out of it. Each parses what came in, runs one use case, and answers.

| route | who | answer |
|---|---|---|
| GET /cart | logged in | 200 cart |
| PUT /cart/items/{sku} ``{quantity}`` | logged in | 200 cart |
| DELETE /cart/items/{sku} | logged in | 200 cart |
| DELETE /cart | logged in | 200 the empty cart |

The cart is always the caller's own: its owner is the access token's subject.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from sqlalchemy import Connection

from agora.deps import CurrentUser, provided
from agora.fields import WholeNumber
from agora.messaging import CloudEvent, Subscription
from cart import application
from cart.application import EmptyCart, RemoveLine, SetQuantity, ViewCart
from cart.domain import QUANTITY_MAX, SKU_PATTERN, Cart
from contracts.orders import OrderPlaced

JSON = "application/json"

router = APIRouter(tags=["cart"])


Parts = Annotated[application.Parts, Depends(provided(application.Parts))]
Sku = Annotated[str, Path(pattern=SKU_PATTERN, description="Upper-case letters, digits and '-'.")]


class ItemOut(BaseModel):
    """A line of the cart, priced by the catalogue now."""

    model_config = ConfigDict(from_attributes=True)

    sku: str
    name: str | None = Field(
        description="The product's name; null when the catalogue does not know it (any more)."
    )
    quantity: int
    unit_price: int | None = Field(
        description="Minor units of the cart's currency; null when the line cannot be bought: "
        "the product is unknown, no longer sold, or priced in another currency."
    )
    line_total: int | None = Field(description="unit_price x quantity; null as unit_price.")
    available: bool = Field(
        description="Whether the line can be ordered. One that cannot is kept, so the shopper "
        "sees it, but counts nothing in the total; an order refuses a cart that holds one."
    )


class CartOut(BaseModel):
    # Read from the domain's ``Cart``: ``CartOut.model_validate(cart)``.
    model_config = ConfigDict(from_attributes=True)

    items: list[ItemOut] = Field(
        description="In the order the lines were last set: the one added or changed last, last."
    )
    total: int = Field(description="Minor units of `currency`: the sum of the available lines.")
    currency: str = Field(description="ISO 4217 code: the catalogue's prices' currency.")


class NewQuantity(BaseModel):
    """How many units of the product the cart should hold."""

    model_config = ConfigDict(extra="forbid", strict=True)

    quantity: WholeNumber = Field(
        ge=0, le=QUANTITY_MAX, description="Units wanted; 0 removes the line.", examples=[2]
    )


_CART = TypeAdapter(CartOut)


def _answer(cart: Cart) -> Response:
    return Response(_CART.dump_json(CartOut.model_validate(cart)), media_type=JSON)


# The refusals every route may answer, each a problem document (the chassis documents the shape).
REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid access token."},
    503: {"description": "The catalogue or the cart store cannot answer; nothing was changed."},
}


@router.get("/cart", response_model=CartOut, responses=REFUSALS)
async def get_cart(user: CurrentUser, parts: Parts) -> Response:
    """The caller's cart, priced by the catalogue now."""
    return _answer(await application.view_cart(parts, ViewCart(user.id)))


@router.put(
    "/cart/items/{sku}",
    response_model=CartOut,
    responses={
        **REFUSALS,
        404: {"description": "The catalogue has no product with this sku."},
        422: {
            "description": "A malformed sku or body; a product no longer sold, or priced in "
            "another currency than the cart; a new line in a cart that has 50 already."
        },
    },
)
async def set_item(sku: Sku, body: NewQuantity, user: CurrentUser, parts: Parts) -> Response:
    """Set how many units of a product the cart holds (1 to 100); 0 removes the line."""
    command = SetQuantity(user.id, sku, body.quantity)
    return _answer(await application.set_quantity(parts, command))


@router.delete(
    "/cart/items/{sku}",
    response_model=CartOut,
    responses={**REFUSALS, 422: {"description": "A malformed sku."}},
)
async def remove_item(sku: Sku, user: CurrentUser, parts: Parts) -> Response:
    """Remove a line from the cart; removing one that is not there is no error."""
    return _answer(await application.remove_line(parts, RemoveLine(user.id, sku)))


@router.delete("/cart", response_model=CartOut, responses=REFUSALS)
async def empty_cart(user: CurrentUser, parts: Parts) -> Response:
    """Remove every line; the answer is the empty cart."""
    return _answer(await application.empty_cart(parts, EmptyCart(user.id)))


def subscriptions(parts: application.Parts) -> tuple[Subscription, ...]:
    """What the cart listens to: orders placed, whose lines leave the cart, handled with the
    carts of the parts bootstrap chose, as the routes are."""
    carts = parts.carts

    def remove_ordered(connection: Connection, event: OrderPlaced, envelope: CloudEvent) -> None:
        # With Redis the lines leave before the inbox row commits: when that commit fails, the
        # event comes again and this runs twice. That is safe: a line goes only if it was not
        # set after placed_at, so a second run finds nothing more to take, and keeps what the
        # shopper has added since.
        skus = sorted({line.sku for line in event.lines})
        application.remove_ordered(connection, carts, event.user_id, skus, event.placed_at)

    return (Subscription(OrderPlaced, remove_ordered),)
