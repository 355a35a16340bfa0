"""What the services answer the storefront, as typed values (their HTTP answers' fields that the
pages use), with what the templates show of each: its page's address, its image, its status in
words.

Every field has a default, and the models ignore fields they do not name, so a service may add
to its answers without breaking a page; a body that is not the shape at all is a service
misbehaving (see :meth:`gateway.storefront.client.ServicesClient.read`).
"""

from __future__ import annotations

from typing import Generic, Literal, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, StrictInt, field_validator

from contracts.api import CheckoutStep, OrderStatus
from gateway.storefront import images
from gateway.storefront.forms import cancel_reason

_T = TypeVar("_T")

# The checkout's steps as the order page shows them, in order: the order placed, then orders'
# `checkout.step` while it is under way.
STEPS = (
    ("placed", "Order placed"),
    (CheckoutStep.RESERVING.value, "Items reserved"),
    (CheckoutStep.AUTHORIZING.value, "Card charged"),
    (CheckoutStep.COMPLETING.value, "Order confirmed"),
)
# How a step's state is read out (storefront.js has the same words).
STEP_WORDS = {"done": "done", "current": "in progress", "todo": "to come", "skipped": "not reached"}


def product_path(sku: str) -> str:
    return f"/products/{quote(sku, safe='')}"


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Page(_Answer, Generic[_T]):
    """One page of a service's list, and the cursor of the next when there is one."""

    items: list[_T] = []
    next_cursor: str | None = None


class Category(_Answer):
    slug: str = ""
    name: str = ""
    product_count: int | None = None


class Product(_Answer):
    sku: str = ""
    name: str = ""
    description: str = ""
    price: int | None = None
    currency: str = ""
    category: str = ""
    image_url: str | None = None
    # Only an explicit false takes a product off sale.
    active: bool = True

    @property
    def href(self) -> str:
        return product_path(self.sku)

    @property
    def image(self) -> str:
        """Catalog's image when it can be shown, else the generated placeholder."""
        if self.image_url is not None and images.shown(self.image_url):
            return self.image_url
        return f"{self.href}/image.svg"

    @field_validator("active", mode="before")
    @classmethod
    def _unless_false(cls, value: object) -> object:
        return True if value is None else value


class Stock(_Answer):
    available: StrictInt | None = None


class OrderLine(_Answer):
    """A line of an order; of a cart, too, whose lines may have lost their name and price."""

    sku: str = ""
    name: str | None = None
    quantity: int = 0
    unit_price: int | None = None
    line_total: int | None = None


class CartLine(OrderLine):
    available: bool | None = False

    @property
    def href(self) -> str:
        return product_path(self.sku)

    @property
    def action(self) -> str:
        """Where the line's forms post (its quantity; ``/remove``)."""
        return f"/cart/items/{quote(self.sku, safe='')}"

    @property
    def orderable(self) -> bool:
        return bool(self.available)


class Cart(_Answer):
    items: list[CartLine] = []
    total: int | None = None
    currency: str = ""

    @property
    def units(self) -> int:
        """How many units it holds, as the header counts them."""
        return sum(line.quantity for line in self.items)

    def quantity_of(self, sku: str) -> int:
        return next((line.quantity for line in self.items if line.sku == sku), 0)


class Address(_Answer):
    name: str = ""
    line1: str = ""
    line2: str | None = None
    city: str = ""
    postal_code: str = ""
    country: str = ""


class Checkout(_Answer):
    step: str = ""


class Order(_Answer):
    id: str
    status: str = ""
    reason: str | None = None
    lines: list[OrderLine] = []
    total: int | None = None
    currency: str = ""
    shipping_address: Address | None = None
    card_brand: str = ""
    card_last4: str = ""
    placed_at: str = ""
    updated_at: str = ""
    checkout: Checkout | None = None

    @property
    def href(self) -> str:
        return f"/orders/{quote(self.id, safe='')}"

    @property
    def step(self) -> str:
        return self.checkout.step if self.checkout is not None else ""

    @property
    def reason_text(self) -> str:
        return cancel_reason(self.reason) if self.status == OrderStatus.CANCELLED else ""

    @property
    def step_states(self) -> dict[str, str]:
        return step_states(self.status, self.step)


class Shipment(_Answer):
    """An order's parcel, as shipping answers it."""

    id: str = ""
    order_id: str = ""
    status: str = ""
    carrier: str = ""
    service_level: str = ""
    tracking_number: str = ""
    created_at: str = ""
    dispatched_at: str | None = None
    delivered_at: str | None = None


# A shipment's status (shipping's `status`) in words; the last two are final.
SHIPMENT_WORDS = {
    "label_created": "Label created: waiting for the carrier to collect it",
    "dispatched": "Dispatched: on its way with the carrier",
    "delivered": "Delivered",
    "cancelled": "Shipment cancelled",
}
SHIPMENT_FINAL = frozenset({"delivered", "cancelled"})
# Carriers by the names people know them by; any other is its slug in words.
CARRIER_NAMES = {
    "royal-mail": "Royal Mail",
    "dhl": "DHL",
    "dhl-express": "DHL Express",
    "ups": "UPS",
}


def _in_words(slug: str) -> str:
    return slug.replace("-", " ").replace("_", " ").capitalize()


class Delivery(_Answer):
    """An order's delivery as its page shows it, and as the page's live stream sends it
    (``storefront.js`` puts these texts in their places): ``shipped`` with the shipment's
    status, carrier and tracking number; ``awaiting`` before shipping made the shipment;
    ``unavailable`` while shipping does not answer; ``none`` for a cancelled order."""

    state: Literal["shipped", "awaiting", "unavailable", "none"]
    note: str = ""
    status: str = ""
    status_text: str = ""
    carrier: str = ""
    tracking_number: str = ""
    # Nothing will change any more: the page stops following it.
    final: bool = False

    @classmethod
    def of(cls, order_status: str, shipment: Shipment | None) -> Delivery:
        """The delivery of an order in ``order_status`` whose shipment is ``shipment``."""
        if shipment is not None:
            carrier = CARRIER_NAMES.get(shipment.carrier) or _in_words(shipment.carrier)
            level = _in_words(shipment.service_level)
            return cls(
                state="shipped",
                status=shipment.status,
                status_text=SHIPMENT_WORDS.get(shipment.status) or _in_words(shipment.status),
                carrier=f"{carrier}, {level}" if level else carrier,
                tracking_number=shipment.tracking_number,
                final=shipment.status in SHIPMENT_FINAL,
            )
        if order_status == OrderStatus.CANCELLED:
            return cls(
                state="none", note="Nothing will be shipped: the order was cancelled.", final=True
            )
        if order_status == OrderStatus.CONFIRMED:
            return cls(
                state="awaiting",
                note="Your parcel is being prepared; its tracking number will show here.",
            )
        return cls(state="awaiting", note="Shipping starts once the order is confirmed.")

    @classmethod
    def unavailable(cls) -> Delivery:
        return cls(
            state="unavailable",
            note="Delivery details are unavailable right now; they will show here once "
            "shipping answers again.",
        )


class Message(_Answer):
    order_id: str | None = None
    subject: str = ""
    body: str = ""
    created_at: str = ""


class Token(_Answer):
    access_token: str
    expires_in: int


def step_states(status: str, step: str) -> dict[str, str]:
    """Each of :data:`STEPS` as ``done``, ``current``, ``todo`` or ``skipped`` (the same rule
    as storefront.js, which redraws them as the status events come)."""
    names = [name for name, _ in STEPS]
    if status == OrderStatus.CONFIRMED:
        return dict.fromkeys(names, "done")
    if status == OrderStatus.CANCELLED or step == CheckoutStep.COMPENSATING:
        return {name: "done" if name == "placed" else "skipped" for name in names}
    at = names.index(step) if step in names else (len(names) if step == CheckoutStep.DONE else 1)
    return {
        name: "done" if i < at else "current" if i == at else "todo" for i, name in enumerate(names)
    }
