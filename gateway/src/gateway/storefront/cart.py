"""The cart's pages: the cart, adding a product to it, changing or removing a line.

Quantities are checked against cart's own limit (``contracts.api.QUANTITY_MAX``) before cart is
asked, so the form comes back with its message at once.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from agora.client import Reply
from contracts.api import QUANTITY_MAX
from gateway.storefront.catalogue import product_page
from gateway.storefront.client import CART, Services, ServicesClient, problem, problem_type, segment
from gateway.storefront.common import CSRF, Text, User, cart_page
from gateway.storefront.forms import sentence
from gateway.storefront.models import Cart
from gateway.web import PageNotFound, Unavailable, current_user, login_url, page_router

_REFUSALS = {
    "product-unavailable": "This product is no longer for sale.",
    "mixed-currencies": "This product is priced in another currency than your cart.",
}

router = page_router()


@router.get("/cart")
async def cart(request: Request, user: User, services: Services) -> Response:
    return await _cart_page(request, services)


@router.post("/cart/items", dependencies=CSRF)
async def add_to_cart(
    request: Request, services: Services, sku: Text = "", quantity: Text = "1"
) -> Response:
    product_path = f"/products/{quote(sku, safe='')}"
    if await current_user(request) is None:
        return RedirectResponse(login_url(product_path), 303)
    wanted = _quantity(quantity, least=1)
    if wanted is None:
        return await product_page(
            request,
            services,
            sku,
            error=f"Choose a quantity from 1 to {QUANTITY_MAX}.",
            status=422,
        )
    already = (await services.cart()).quantity_of(sku)
    reply = await services.call(
        "cart",
        "PUT",
        f"/cart/items/{segment(sku)}",
        what=CART,
        json={"quantity": min(QUANTITY_MAX, already + wanted)},
    )
    if reply.status == 404:
        raise PageNotFound("There is no such product.")
    if reply.status == 422:
        return await product_page(request, services, sku, error=_refusal(reply), status=422)
    if not 200 <= reply.status < 300:
        raise Unavailable(CART)
    return RedirectResponse("/cart", 303)


@router.post("/cart/items/{sku}", dependencies=CSRF)
async def change_line(
    request: Request, sku: str, user: User, services: Services, quantity: Text = ""
) -> Response:
    wanted = _quantity(quantity, least=0)
    if wanted is None:
        error = f"Choose a quantity from 0 to {QUANTITY_MAX} (0 removes the item)."
        return await _cart_page(request, services, errors={sku: error}, status=422)
    path = f"/cart/items/{segment(sku)}"
    reply = await services.call("cart", "PUT", path, what=CART, json={"quantity": wanted})
    if reply.status in (404, 422):
        return await _cart_page(request, services, errors={sku: _refusal(reply)}, status=422)
    if not 200 <= reply.status < 300:
        raise Unavailable(CART)
    return RedirectResponse("/cart", 303)


@router.post("/cart/items/{sku}/remove", dependencies=CSRF)
async def remove_line(request: Request, sku: str, user: User, services: Services) -> Response:
    await services.fetch(Cart, "cart", "DELETE", f"/cart/items/{segment(sku)}", what=CART)
    return RedirectResponse("/cart", 303)


async def _cart_page(
    request: Request,
    services: ServicesClient,
    *,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    context = {"errors": errors or {}, "quantity_max": QUANTITY_MAX}
    return await cart_page(request, services, "storefront/cart.html", context, status=status)


def _quantity(value: str, *, least: int) -> int | None:
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if least <= number <= QUANTITY_MAX else None


def _refusal(reply: Reply) -> str:
    if reply.status == 404:
        return "There is no such product any more."
    kind = problem_type(reply)
    if kind in _REFUSALS:
        return _REFUSALS[kind]
    return sentence(str(problem(reply).get("detail") or "This change could not be made."))
