"""Checkout: the form (the cart, an address, a card) and placing the order with orders.

The form carries an Idempotency-Key made when it was shown, so sending it twice (a double click,
a reload) places one order; a key orders already used for another order is replaced by a new
one, and the form says so.
"""

from __future__ import annotations

import uuid
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response

from agora.client import Reply
from contracts.api import IDEMPOTENCY_KEY_MAX
from gateway.storefront.client import (
    CHECKOUT,
    Services,
    ServicesClient,
    problem,
    problem_type,
    read,
)
from gateway.storefront.common import CSRF, Text, User, cart_page
from gateway.storefront.forms import (
    ADDRESS_FIELDS,
    CARD_FIELD,
    CHECKOUT_REFUSALS,
    TEST_CARDS,
    checkout_body,
    fields_or_general,
    sentence,
)
from gateway.storefront.forms import Form as FormState
from gateway.storefront.models import Order
from gateway.web import Unavailable, page_router


async def _address(request: Request) -> dict[str, str]:
    """The checkout form's address fields as typed; one not sent is empty."""
    sent = await request.form()
    return {
        name: value if isinstance(value := sent.get(name), str) else "" for name in ADDRESS_FIELDS
    }


AddressSent = Annotated[dict[str, str], Depends(_address)]

router = page_router()


@router.get("/checkout")
async def checkout_form(request: Request, user: User, services: Services) -> Response:
    return await _checkout_page(request, services, FormState(), key=_new_key())


@router.post("/checkout", dependencies=CSRF)
async def checkout(
    request: Request,
    user: User,
    services: Services,
    address: AddressSent,
    card_number: Text = "",
    idempotency_key: Text = "",
) -> Response:
    # The card number is never shown again, nor kept: the form comes back without it.
    form = FormState(values=address)
    key = idempotency_key.strip()
    if not key or len(key) > IDEMPOTENCY_KEY_MAX or not key.isprintable():
        form.general.append("The form was incomplete; check it and submit it again.")
        return await _checkout_page(request, services, form, key=_new_key(), status=400)
    reply = await services.call(
        "orders",
        "POST",
        "/orders",
        what=CHECKOUT,
        json=checkout_body({**address, CARD_FIELD: card_number}),
        headers={"Idempotency-Key": key},
    )
    if reply.status in (200, 201, 202):
        order = read(Order, reply, CHECKOUT)
        return RedirectResponse(f"/orders/{quote(order.id, safe='')}", 303)
    if not 400 <= reply.status < 500:
        raise Unavailable(CHECKOUT)
    kind = problem_type(reply)
    if kind == "idempotency-key-reused":
        key = _new_key()
    _refusal(reply, kind, form)
    return await _checkout_page(request, services, form, key=key, status=reply.status)


async def _checkout_page(
    request: Request, services: ServicesClient, form: FormState, *, key: str, status: int = 200
) -> Response:
    context = {"form": form, "idempotency_key": key, "test_cards": TEST_CARDS}
    return await cart_page(request, services, "storefront/checkout.html", context, status=status)


def _new_key() -> str:
    return uuid.uuid4().hex


def _refusal(reply: Reply, kind: str, form: FormState) -> None:
    document = problem(reply)
    if kind in CHECKOUT_REFUSALS:
        form.general.append(CHECKOUT_REFUSALS[kind])
    elif kind == "invalid-card":
        form.error(CARD_FIELD, sentence(str(document.get("detail") or "Check the card number.")))
    elif reply.status == 422:
        fields_or_general(document, (*ADDRESS_FIELDS, CARD_FIELD), form)
    else:
        form.general.append(
            sentence(str(document.get("detail") or "The order could not be placed."))
        )
