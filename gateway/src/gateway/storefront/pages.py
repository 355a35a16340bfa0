"""The storefront's routes: the shop's pages, its forms, the order's live status and the product
placeholder images. Each asks the services (through :class:`~gateway.storefront.upstream.Shop`)
and renders a template under ``templates/storefront/``.

Every form's POST checks its CSRF token, and answers with a redirect (303) when it did what was
asked, so that reloading the next page does not send the form again; when it did not, the same
page comes back with the messages beside the fields.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import AsyncExitStack
from typing import Annotated, Any, TypeVar
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from agora.auth import Principal
from agora.errors import Problem
from gateway.settings import GatewaySettings
from gateway.storefront import images
from gateway.storefront.forms import (
    ADDRESS_FIELDS,
    CANCEL_REASONS,
    CARD_FIELD,
    CHECKOUT_REFUSALS,
    GENERAL_CANCEL_REASON,
    TEST_CARDS,
    cancel_reason,
    checkout_body,
    field_errors,
)
from gateway.storefront.forms import (
    Form as FormState,
)
from gateway.storefront.upstream import (
    CART,
    CATALOGUE,
    CHECKOUT,
    MESSAGES,
    ORDERS,
    SIGN_IN,
    Shop,
    body,
    cart_units,
    problem,
    problem_type,
    segment,
)
from gateway.web import (
    CART_COUNT_STATE,
    STATIC_DIR,
    PageError,
    PageNotFound,
    SessionExpired,
    Unavailable,
    check_csrf,
    current_user,
    end_session,
    login_url,
    page_router,
    render,
    require_user,
    safe_next,
    set_session,
)

QUANTITY_MAX = 100  # what cart accepts per line
SORTS = {"name": "Name", "price": "Price: low to high", "-price": "Price: high to low"}
EVENT_STREAM = "text/event-stream"
# The checkout's steps as the order page shows them, in order; orders' `checkout.step` names the
# one under way.
STEPS = (
    ("placed", "Order placed"),
    ("reserving", "Items reserved"),
    ("authorizing", "Card charged"),
    ("completing", "Order confirmed"),
)
# How a step's state is read out (storefront.js has the same words).
STEP_WORDS = {"done": "done", "current": "in progress", "todo": "to come", "skipped": "not reached"}
_CART_REFUSALS = {
    "product-unavailable": "This product is no longer for sale.",
    "mixed-currencies": "This product is priced in another currency than your cart.",
}


async def _anyone(request: Request) -> Principal | None:
    """The user, or None, also when the session expired: for the pages that log a user in."""
    try:
        return await current_user(request)
    except SessionExpired:
        return None


User = Annotated[Principal, Depends(require_user)]
MaybeUser = Annotated[Principal | None, Depends(current_user)]
Anyone = Annotated[Principal | None, Depends(_anyone)]
Text = Annotated[str, Form()]
CSRF = [Depends(check_csrf)]

_T = TypeVar("_T")


def storefront_router(settings: GatewaySettings) -> APIRouter:
    router = page_router()
    page_size = str(settings.storefront_page_size)

    # --- browsing ---------------------------------------------------------------------------

    @router.get("/")
    async def home(
        request: Request,
        user: MaybeUser,
        q: str = "",
        category: str = "",
        sort: str = "",
        cursor: str = "",
    ) -> Response:
        shop = Shop(request)
        q = " ".join(q.split())[:200]
        params = {"limit": page_size}
        for name, value in (("q", q), ("category", category), ("cursor", cursor)):
            if value:
                params[name] = value
        if sort in SORTS:
            params["sort"] = sort
        reply, categories, _ = await _together(
            shop.call("catalog", "GET", "/products", what=CATALOGUE, params=params),
            _categories(shop),
            _header_count(request, shop),
        )
        if reply.status in (400, 422):
            raise _bad_listing()
        if reply.status != 200:
            raise Unavailable(CATALOGUE)
        listing = body(reply, CATALOGUE)
        here = {k: v for k, v in (("q", q), ("category", category), ("sort", sort)) if v}
        next_cursor = listing.get("next_cursor")
        chosen = next((c for c in categories if c.get("slug") == category), None)
        return render(
            request,
            "storefront/home.html",
            {
                "products": [_card(product) for product in listing.get("items", [])],
                "categories": categories,
                "category": category,
                "category_name": chosen["name"] if chosen else category,
                "search_q": q,
                "sort": sort if sort in SORTS else "",
                "sorts": SORTS,
                "paged": bool(cursor),
                "first_page": "/?" + urlencode(here) if here else "/",
                "next_page": "/?" + urlencode({**here, "cursor": next_cursor})
                if next_cursor
                else None,
            },
        )

    @router.get("/categories")
    async def categories(request: Request, user: MaybeUser) -> Response:
        shop = Shop(request)
        found, _ = await _together(
            shop.json("catalog", "GET", "/categories", what=CATALOGUE),
            _header_count(request, shop),
        )
        return render(request, "storefront/categories.html", {"categories": found})

    @router.get("/products/{sku}")
    async def product(request: Request, sku: str, user: MaybeUser) -> Response:
        return await _product_page(request, sku)

    @router.get("/products/{sku}/image.svg")
    async def product_image(request: Request, sku: str) -> Response:
        shop = Shop(request)
        shop.token = None  # the image is the same for everyone, and cached as such
        name = ""
        try:
            reply = await shop.call("catalog", "GET", f"/products/{segment(sku)}", what=CATALOGUE)
        except Unavailable:
            reply = None  # the catalogue is away: the sku's letters will do
        if reply is not None:
            if reply.status == 404:
                return Response("no such product", status_code=404, media_type="text/plain")
            if reply.status == 200:
                name = str(body(reply, CATALOGUE).get("name") or "")
        svg = images.placeholder(sku, name)
        tag = images.etag(svg)
        # Made from the catalogue's name only when it answered: then a day in caches is fine.
        cache = "public, max-age=86400" if name else "no-cache"
        headers = {"ETag": tag, "Cache-Control": cache}
        if request.headers.get("if-none-match") == tag:
            return Response(status_code=304, headers=headers)
        return Response(svg, media_type="image/svg+xml", headers=headers)

    # --- signing in -------------------------------------------------------------------------

    @router.get("/login")
    async def login_form(
        request: Request, user: Anyone, next: str = "/", expired: str = ""
    ) -> Response:
        form = FormState(values={"next": safe_next(next)})
        if expired:
            form.general.append("Your session expired; log in again to continue.")
        return render(request, "storefront/login.html", {"form": form}, headers=_private())

    @router.post("/login", dependencies=CSRF)
    async def login(
        request: Request, email: Text = "", password: Text = "", next: Text = "/"
    ) -> Response:
        form = _credentials_form(email, password, next)
        if form.ok:
            shop = Shop(request)
            shop.token = None
            reply = await shop.call(
                "identity",
                "POST",
                "/token",
                what=SIGN_IN,
                json={"email": email.strip(), "password": password},
            )
            if reply.status == 200:
                return await _signed_in(request, body(reply, SIGN_IN), form.values["next"])
            _login_refusal(reply, form)
        return render(request, "storefront/login.html", {"form": form}, status=_status(form))

    @router.get("/register")
    async def register_form(request: Request, user: Anyone, next: str = "/") -> Response:
        form = FormState(values={"next": safe_next(next)})
        return render(request, "storefront/register.html", {"form": form}, headers=_private())

    @router.post("/register", dependencies=CSRF)
    async def register(
        request: Request, email: Text = "", password: Text = "", next: Text = "/"
    ) -> Response:
        form = _credentials_form(email, password, next)
        if form.ok:
            shop = Shop(request)
            shop.token = None
            credentials = {"email": email.strip(), "password": password}
            reply = await shop.call("identity", "POST", "/users", what=SIGN_IN, json=credentials)
            if reply.status == 201:
                token = await shop.json(
                    "identity", "POST", "/token", what=SIGN_IN, json=credentials
                )
                return await _signed_in(request, token, form.values["next"])
            _register_refusal(reply, form)
        return render(request, "storefront/register.html", {"form": form}, status=_status(form))

    @router.post("/logout", dependencies=CSRF)
    async def logout(request: Request) -> Response:
        response = RedirectResponse("/", 303)
        await end_session(response, request)
        return response

    # --- the cart ---------------------------------------------------------------------------

    @router.get("/cart")
    async def cart(request: Request, user: User) -> Response:
        return await _cart_page(request)

    @router.post("/cart/items", dependencies=CSRF)
    async def add_to_cart(request: Request, sku: Text = "", quantity: Text = "1") -> Response:
        product_path = f"/products/{quote(sku, safe='')}"
        if await current_user(request) is None:
            return RedirectResponse(login_url(product_path), 303)
        wanted = _quantity(quantity, least=1)
        if wanted is None:
            return await _product_page(
                request, sku, error=f"Choose a quantity from 1 to {QUANTITY_MAX}.", status=422
            )
        shop = Shop(request)
        held = await shop.json("cart", "GET", "/cart", what=CART)
        already = next(
            (int(item["quantity"]) for item in held.get("items", []) if item.get("sku") == sku), 0
        )
        reply = await shop.call(
            "cart",
            "PUT",
            f"/cart/items/{segment(sku)}",
            what=CART,
            json={"quantity": min(QUANTITY_MAX, already + wanted)},
        )
        if reply.status == 404:
            raise PageNotFound("There is no such product.")
        if reply.status == 422:
            return await _product_page(request, sku, error=_cart_refusal(reply), status=422)
        if not 200 <= reply.status < 300:
            raise Unavailable(CART)
        return RedirectResponse("/cart", 303)

    @router.post("/cart/items/{sku}", dependencies=CSRF)
    async def change_line(request: Request, sku: str, user: User, quantity: Text = "") -> Response:
        wanted = _quantity(quantity, least=0)
        if wanted is None:
            error = f"Choose a quantity from 0 to {QUANTITY_MAX} (0 removes the item)."
            return await _cart_page(request, errors={sku: error}, status=422)
        shop = Shop(request)
        path = f"/cart/items/{segment(sku)}"
        reply = await shop.call("cart", "PUT", path, what=CART, json={"quantity": wanted})
        if reply.status in (404, 422):
            return await _cart_page(request, errors={sku: _cart_refusal(reply)}, status=422)
        if not 200 <= reply.status < 300:
            raise Unavailable(CART)
        return RedirectResponse("/cart", 303)

    @router.post("/cart/items/{sku}/remove", dependencies=CSRF)
    async def remove_line(request: Request, sku: str, user: User) -> Response:
        await Shop(request).json("cart", "DELETE", f"/cart/items/{segment(sku)}", what=CART)
        return RedirectResponse("/cart", 303)

    # --- checkout ---------------------------------------------------------------------------

    @router.get("/checkout")
    async def checkout_form(request: Request, user: User) -> Response:
        return await _checkout_page(request, FormState(), key=_new_key())

    @router.post("/checkout", dependencies=CSRF)
    async def checkout(
        request: Request,
        user: User,
        name: Text = "",
        line1: Text = "",
        line2: Text = "",
        city: Text = "",
        postal_code: Text = "",
        country: Text = "",
        card_number: Text = "",
        idempotency_key: Text = "",
    ) -> Response:
        address = {
            "name": name,
            "line1": line1,
            "line2": line2,
            "city": city,
            "postal_code": postal_code,
            "country": country,
        }
        # The card number is never shown again, nor kept: the form comes back without it.
        form = FormState(values=address)
        key = idempotency_key.strip()
        if not key or len(key) > 200 or not key.isprintable():
            form.general.append("The form was incomplete; check it and submit it again.")
            return await _checkout_page(request, form, key=_new_key(), status=400)
        shop = Shop(request)
        reply = await shop.call(
            "orders",
            "POST",
            "/orders",
            what=CHECKOUT,
            json=checkout_body({**address, CARD_FIELD: card_number}),
            headers={"Idempotency-Key": key},
        )
        if reply.status in (200, 201, 202):
            order = body(reply, CHECKOUT)
            return RedirectResponse(f"/orders/{quote(str(order['id']), safe='')}", 303)
        if not 400 <= reply.status < 500:
            raise Unavailable(CHECKOUT)
        kind = problem_type(reply)
        if kind == "idempotency-key-reused":
            key = _new_key()
        _checkout_refusal(reply, kind, form)
        return await _checkout_page(request, form, key=key, status=reply.status)

    # --- orders and messages ----------------------------------------------------------------

    @router.get("/orders")
    async def orders(request: Request, user: User, cursor: str = "") -> Response:
        shop = Shop(request)
        params = {"limit": "20", **({"cursor": cursor} if cursor else {})}
        reply, _ = await _together(
            shop.call("orders", "GET", "/orders", what=ORDERS, params=params),
            _header_count(request, shop),
        )
        if reply.status == 400:
            raise _bad_listing()
        if reply.status != 200:
            raise Unavailable(ORDERS)
        page = body(reply, ORDERS)
        nxt = page.get("next_cursor")
        return render(
            request,
            "storefront/orders.html",
            {
                "orders": [_order_view(order) for order in page.get("items", [])],
                "paged": bool(cursor),
                "next_page": "/orders?" + urlencode({"cursor": nxt}) if nxt else None,
            },
        )

    @router.get("/orders/{order_id}")
    async def order(request: Request, order_id: str, user: User) -> Response:
        shop = Shop(request)
        reply, _ = await _together(
            shop.call("orders", "GET", f"/orders/{segment(order_id)}", what=ORDERS),
            _header_count(request, shop),
        )
        if reply.status in (400, 403, 404, 422):
            raise PageNotFound("There is no such order in your account.")
        if reply.status != 200:
            raise Unavailable(ORDERS)
        return render(
            request,
            "storefront/order.html",
            {
                "order": _order_view(body(reply, ORDERS)),
                "steps": STEPS,
                "step_words": STEP_WORDS,
                "reasons": CANCEL_REASONS,
                "general_reason": GENERAL_CANCEL_REASON,
                "live_url": f"/orders/{quote(order_id, safe='')}/live",
            },
        )

    @router.get("/orders/{order_id}/live")
    async def order_live(request: Request, order_id: str) -> Response:
        """Orders' status events for this order, passed through as they come."""
        if await _anyone(request) is None:
            return _plain(401, "log in to follow this order")
        shop = Shop(request)
        stack = AsyncExitStack()
        try:
            upstream = await stack.enter_async_context(
                shop.client.stream(
                    "orders",
                    "GET",
                    f"/orders/{segment(order_id)}/events",
                    headers=list(shop.headers({"Accept": EVENT_STREAM}).items()),
                )
            )
        except Problem:
            await stack.aclose()
            return _plain(503, "orders is unavailable right now, try again in a moment")
        if upstream.status != 200:
            await stack.aclose()
            if upstream.status in (400, 403, 404):
                return _plain(404, "no such order")
            if upstream.status == 401:
                return _plain(401, "log in to follow this order")
            return _plain(503, "orders is unavailable right now, try again in a moment")

        async def events() -> AsyncIterator[bytes]:
            async with stack:
                async for chunk in upstream.content.iter_any():
                    yield chunk

        return StreamingResponse(
            events(),
            media_type=EVENT_STREAM,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @router.get("/messages")
    async def messages(request: Request, user: User, cursor: str = "") -> Response:
        shop = Shop(request)
        params = {"limit": "20", **({"cursor": cursor} if cursor else {})}
        reply, _ = await _together(
            shop.call("notifications", "GET", "/notifications", what=MESSAGES, params=params),
            _header_count(request, shop),
        )
        if reply.status in (400, 422):
            raise _bad_listing()
        if reply.status != 200:
            raise Unavailable(MESSAGES)
        page = body(reply, MESSAGES)
        nxt = page.get("next_cursor")
        return render(
            request,
            "storefront/messages.html",
            {
                "messages": page.get("items", []),
                "paged": bool(cursor),
                "next_page": "/messages?" + urlencode({"cursor": nxt}) if nxt else None,
            },
        )

    # --- the pages made in more than one place ----------------------------------------------

    async def _product_page(
        request: Request, sku: str, *, error: str | None = None, status: int = 200
    ) -> Response:
        shop = Shop(request)
        reply, stock, _ = await _together(
            shop.call("catalog", "GET", f"/products/{segment(sku)}", what=CATALOGUE),
            _stock(shop, sku),
            _header_count(request, shop),
        )
        if reply.status in (400, 404, 422):
            raise PageNotFound("There is no such product in the shop.")
        if reply.status != 200:
            raise Unavailable(CATALOGUE)
        found = body(reply, CATALOGUE)
        return render(
            request,
            "storefront/product.html",
            {
                "product": _card(found),
                "stock": stock,
                "error": error,
                "quantity_max": QUANTITY_MAX,
            },
            status=status,
        )

    async def _cart_page(
        request: Request, *, errors: dict[str, str] | None = None, status: int = 200
    ) -> Response:
        held, lines = await _held_cart(request)
        return render(
            request,
            "storefront/cart.html",
            {
                "cart": held,
                "lines": lines,
                "errors": errors or {},
                "orderable": bool(lines) and all(line["available"] for line in lines),
                "quantity_max": QUANTITY_MAX,
            },
            status=status,
        )

    async def _checkout_page(
        request: Request, form: FormState, *, key: str, status: int = 200
    ) -> Response:
        held, lines = await _held_cart(request)
        return render(
            request,
            "storefront/checkout.html",
            {
                "form": form,
                "cart": held,
                "lines": lines,
                "empty": not lines,
                "unorderable": any(not line["available"] for line in lines),
                "idempotency_key": key,
                "test_cards": TEST_CARDS,
            },
            status=status,
        )

    return router


# --- helpers ------------------------------------------------------------------------------------


async def _together(*calls: Awaitable[Any]) -> list[Any]:
    """Run ``calls`` at once; the first failure is raised once all have ended (so none is left
    running unobserved)."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


async def _header_count(request: Request, shop: Shop) -> None:
    setattr(request.state, CART_COUNT_STATE, await shop.cart_count())


async def _categories(shop: Shop) -> list[dict[str, Any]]:
    """The categories for the filter; none when the catalogue does not answer them (the
    products may still be listed)."""
    try:
        found = await shop.json("catalog", "GET", "/categories", what=CATALOGUE)
    except Unavailable:
        return []
    return [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []


async def _stock(shop: Shop, sku: str) -> str:
    """``in``, ``out`` or ``unknown`` (inventory does not answer: the page is still worth
    showing)."""
    try:
        reply = await shop.call(
            "inventory", "GET", f"/inventory/stock/{segment(sku)}", what="Stock"
        )
        if reply.status != 200:
            return "unknown"
        available = body(reply, "Stock").get("available")
    except (Unavailable, SessionExpired, AttributeError):
        return "unknown"
    if not isinstance(available, int):
        return "unknown"
    return "in" if available > 0 else "out"


def _bad_listing() -> PageError:
    return PageError(
        400, "Page not found", "This page of the list does not exist; start again from the first."
    )


async def _held_cart(request: Request) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The user's cart and its lines as the pages show them; the header's count comes with it."""
    held = await Shop(request).json("cart", "GET", "/cart", what=CART)
    setattr(request.state, CART_COUNT_STATE, cart_units(held))
    return held, [_line(item) for item in held.get("items", [])]


def _credentials_form(email: str, password: str, next_path: str) -> FormState:
    """The login or register form as sent, with a message beside each field left empty."""
    form = FormState(values={"email": email.strip(), "next": safe_next(next_path)})
    if not email.strip():
        form.error("email", "Fill this in.")
    if not password:
        form.error("password", "Fill this in.")
    return form


def _shown_image(image: object) -> bool:
    """Whether catalog's image can be shown as it is: one hosted elsewhere (http or https), or a
    file this gateway serves under /static. Any other path would be a broken image, so the
    generated placeholder stands in for it."""
    if not isinstance(image, str):
        return False
    if image.startswith(("https://", "http://")):
        return True
    if not image.startswith("/static/") or ".." in image:
        return False
    return (STATIC_DIR / image.removeprefix("/static/")).is_file()


def _card(product: dict[str, Any]) -> dict[str, Any]:
    """A product as the templates show it: its page, its image (catalog's, or the placeholder)."""
    sku = str(product.get("sku", ""))
    image = product.get("image_url")
    if not _shown_image(image):
        image = f"/products/{quote(sku, safe='')}/image.svg"
    return {
        **product,
        "href": f"/products/{quote(sku, safe='')}",
        "image": image,
        "active": product.get("active", True) is not False,
    }


def _line(item: dict[str, Any]) -> dict[str, Any]:
    sku = str(item.get("sku", ""))
    return {
        **item,
        "available": bool(item.get("available")),
        "href": f"/products/{quote(sku, safe='')}",
        "action": f"/cart/items/{quote(sku, safe='')}",
    }


def _order_view(order: dict[str, Any]) -> dict[str, Any]:
    status = str(order.get("status", ""))
    checkout = order.get("checkout")
    step = str(checkout.get("step", "")) if isinstance(checkout, dict) else ""
    return {
        **order,
        "href": f"/orders/{quote(str(order.get('id', '')), safe='')}",
        "reason_text": cancel_reason(order.get("reason")) if status == "CANCELLED" else "",
        "step_states": step_states(status, step),
        "step": step,
    }


def step_states(status: str, step: str) -> dict[str, str]:
    """Each of :data:`STEPS` as ``done``, ``current``, ``todo`` or ``skipped`` (the same rule
    as storefront.js, which redraws them as the status events come)."""
    names = [name for name, _ in STEPS]
    if status == "CONFIRMED":
        return dict.fromkeys(names, "done")
    if status == "CANCELLED" or step == "compensating":
        return {name: "done" if name == "placed" else "skipped" for name in names}
    at = names.index(step) if step in names else (len(names) if step == "done" else 1)
    return {
        name: "done" if i < at else "current" if i == at else "todo" for i, name in enumerate(names)
    }


def _quantity(value: str, *, least: int) -> int | None:
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if least <= number <= QUANTITY_MAX else None


def _new_key() -> str:
    return uuid.uuid4().hex


def _status(form: FormState) -> int:
    return 200 if form.ok else 422


def _private() -> dict[str, str]:
    return {"Cache-Control": "no-store"}


def _plain(status: int, text: str) -> Response:
    return Response(text + "\n", status_code=status, media_type="text/plain")


async def _signed_in(request: Request, token: Any, next_path: str) -> Response:
    try:
        access, lifetime = str(token["access_token"]), int(token["expires_in"])
    except (KeyError, TypeError, ValueError) as error:
        raise Unavailable(SIGN_IN) from error
    response = RedirectResponse(safe_next(next_path), 303)
    await set_session(response, request, access, lifetime)
    return response


def _login_refusal(reply: Any, form: FormState) -> None:
    if reply.status == 401:
        form.general.append("Wrong email or password.")
    elif reply.status == 429:
        form.general.append(_too_many(reply, "Too many failed attempts"))
    elif reply.status == 422:
        _fields_or_general(problem(reply), ("email", "password"), form)
    else:
        raise Unavailable(SIGN_IN)


def _too_many(reply: Any, what: str) -> str:
    """A 429's sentence: identity refuses when its password checks are all taken, too, and
    then nothing the shopper did is to blame."""
    wait = reply.headers.get("Retry-After", "")
    later = f" in {wait} second{'' if wait == '1' else 's'}" if wait.isdigit() else " later"
    if problem_type(reply) == "hashing-busy":
        return f"The shop is busy checking passwords; try again{later}."
    return f"{what}; try again{later}."


def _register_refusal(reply: Any, form: FormState) -> None:
    kind = problem_type(reply)
    detail = str(problem(reply).get("detail") or "")
    if reply.status == 409:
        form.error("email", "This email already has an account; log in instead.")
    elif kind == "invalid-email":
        form.error("email", _sentence(detail or "This is not an email address."))
    elif kind == "weak-password":
        form.error("password", _sentence(detail or "Choose a longer password."))
    elif reply.status == 422:
        _fields_or_general(problem(reply), ("email", "password"), form)
    elif reply.status == 429:
        form.general.append(_too_many(reply, "Too many attempts"))
    else:
        raise Unavailable(SIGN_IN)


def _checkout_refusal(reply: Any, kind: str, form: FormState) -> None:
    document = problem(reply)
    if kind in CHECKOUT_REFUSALS:
        form.general.append(CHECKOUT_REFUSALS[kind])
    elif kind == "invalid-card":
        form.error(CARD_FIELD, _sentence(str(document.get("detail") or "Check the card number.")))
    elif reply.status == 422:
        _fields_or_general(document, (*ADDRESS_FIELDS, CARD_FIELD), form)
    else:
        form.general.append(
            _sentence(str(document.get("detail") or "The order could not be placed."))
        )


def _fields_or_general(document: dict[str, Any], fields: Iterable[str], form: FormState) -> None:
    messages = field_errors(document, tuple(fields))
    general = messages.pop("", None)
    for name, message in messages.items():
        form.error(name, message)
    if general or not messages:
        form.general.append(general or _sentence(str(document.get("detail") or "Check the form.")))


def _cart_refusal(reply: Any) -> str:
    if reply.status == 404:
        return "There is no such product any more."
    kind = problem_type(reply)
    if kind in _CART_REFUSALS:
        return _CART_REFUSALS[kind]
    return _sentence(str(problem(reply).get("detail") or "This change could not be made."))


def _sentence(text: str) -> str:
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."
