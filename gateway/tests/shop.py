"""A fake of the services behind the storefront (identity, catalog, inventory, cart, orders,
shipping and notifications) in one small aiohttp app, answering as the real ones do (their
paths, their bodies, their problem documents), with everything kept in memory.

It runs in the conftest's ``Upstream`` (a real server on a free port); each service's address
points at it, so the storefront calls it over HTTP as it would the real services.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
import orjson
from aiohttp import web

from .conftest import AUDIENCE, ISSUER, KID, Keys, Upstream

PROBLEM = "application/problem+json"
# As the seed catalogue has them: a path on the shop's own static host that no file answers, and
# one product with an image hosted elsewhere.
IMAGES = {
    "TEA-GREEN-SENCHA": "/static/products/TEA-GREEN-SENCHA.svg",
    "GRINDER-BURR": "https://images.example/grinder-burr.jpg",
}
PRODUCTS: dict[str, dict[str, Any]] = {
    sku: {
        "sku": sku,
        "name": name,
        "description": f"All about {name}.",
        "price": price,
        "currency": "EUR",
        "category": category,
        "image_url": IMAGES.get(sku),
        "active": True,
        "created_at": "2025-01-01T00:00:00Z",
        "updated_at": "2025-01-01T00:00:00Z",
    }
    for sku, name, price, category in (
        ("COF-BEANS-BRAZIL", "Brazil Coffee Beans", 1250, "coffee-tea"),
        ("TEA-GREEN-SENCHA", "Green Sencha Tea", 800, "coffee-tea"),
        ("GRINDER-BURR", "Burr Grinder", 4500, "tools"),
    )
}
CATEGORIES = [
    {"slug": "coffee-tea", "name": "Coffee & tea", "product_count": 2},
    {"slug": "tools", "name": "Tools", "product_count": 1},
]
STOCK = {"COF-BEANS-BRAZIL": 12, "TEA-GREEN-SENCHA": 3, "GRINDER-BURR": 0}
# How orders ends the checkout of a card (the simulated processor's test cards).
CARD_OUTCOMES = {
    "4242424242424242": ("CONFIRMED", None),
    "4000000000000002": ("CANCELLED", "payment_declined"),
    "4000000000000119": ("CANCELLED", "payment_failed"),
}


def issue(
    keys: Keys,
    *,
    sub: str,
    email: str,
    roles: tuple[str, ...] = ("customer",),
    expires_in: int = 900,
    issued_ago: int = 5,
) -> str:
    """An access token as identity signs it."""
    now = int(time.time())
    claims = {
        "sub": sub,
        "email": email,
        "roles": list(roles),
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now - issued_ago,
        "exp": now + expires_in,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(
        claims, keys.signing, algorithm="EdDSA", headers={"kid": KID, "typ": "at+jwt"}
    )


@dataclass
class Account:
    id: str
    email: str
    password: str
    roles: tuple[str, ...] = ("customer",)


@dataclass
class Shop:
    """What the fake services hold."""

    keys: Keys
    accounts: dict[str, Account] = field(default_factory=dict)  # by email
    carts: dict[str, dict[str, int]] = field(default_factory=dict)  # user id -> sku -> quantity
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_key: dict[tuple[str, str], str] = field(default_factory=dict)
    # The bytes each order's event stream sent, to compare with what the storefront passed on.
    streamed: dict[str, bytes] = field(default_factory=dict)
    # identity's password checks all taken: logins and registrations are refused at once.
    hashing_busy: bool = False
    # What shipping answers about an order's shipment, one status for each time it is asked
    # (the last one from then on; None: no shipment yet). An order not named has none.
    carrier: dict[str, list[str | None]] = field(default_factory=dict)

    def add_account(
        self, email: str, password: str, roles: tuple[str, ...] = ("customer",)
    ) -> Account:
        account = Account(str(uuid.uuid4()), email, password, roles)
        self.accounts[email] = account
        return account

    def confirm(self, order_id: str) -> None:
        """The order's checkout done, as if its stream had been followed to the end."""
        self.orders[order_id].update(status="CONFIRMED", checkout={"step": "done", "attempts": 1})

    def token_for(self, account: Account, *, expires_in: int = 900, issued_ago: int = 5) -> str:
        return issue(
            self.keys,
            sub=account.id,
            email=account.email,
            roles=account.roles,
            expires_in=expires_in,
            issued_ago=issued_ago,
        )


def problem(status: int, kind: str, title: str, detail: str = "", **extra: Any) -> web.Response:
    body = {"type": f"/problems/{kind}", "title": title, "status": status, **extra}
    if detail:
        body["detail"] = detail
    return web.Response(body=orjson.dumps(body), status=status, content_type=PROBLEM)


def _hashing_busy() -> web.Response:
    refusal = problem(429, "hashing-busy", "Too many password checks at once")
    refusal.headers["Retry-After"] = "1"
    return refusal


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _caller(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    claims = jwt.decode(token, options={"verify_signature": False})
    return str(claims["sub"])


def _cart_view(shop: Shop, user: str) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    for sku, quantity in shop.carts.get(user, {}).items():
        product = PRODUCTS.get(sku)
        price = product["price"] if product else None
        items.append(
            {
                "sku": sku,
                "name": product["name"] if product else None,
                "quantity": quantity,
                "unit_price": price,
                "line_total": price * quantity if price is not None else None,
                "available": product is not None,
            }
        )
    total = sum(item["line_total"] or 0 for item in items)
    return {"items": items, "total": total, "currency": "EUR"}


def shop_routes(shop: Shop) -> Any:
    def routes(upstream: Upstream) -> list[web.RouteDef]:
        async def ready(_: web.Request) -> web.Response:
            return _json({"status": "ready"})

        # --- identity -----------------------------------------------------------------------

        async def jwks(_: web.Request) -> web.Response:
            return _json(shop.keys.jwks())

        async def register(request: web.Request) -> web.Response:
            if shop.hashing_busy:
                return _hashing_busy()
            data = await request.json()
            email, password = data.get("email", ""), data.get("password", "")
            if email in shop.accounts:
                return problem(409, "email-taken", "Email taken", f"{email} already has an account")
            if len(password) < 10:
                return problem(
                    422, "weak-password", "Weak password", "a password needs at least 10 characters"
                )
            account = shop.add_account(email, password)
            return _json({"id": account.id, "email": email, "roles": ["customer"]}, 201)

        async def token(request: web.Request) -> web.Response:
            if shop.hashing_busy:
                return _hashing_busy()
            data = await request.json()
            account = shop.accounts.get(data.get("email", ""))
            if account is None or account.password != data.get("password"):
                return problem(401, "invalid-credentials", "Invalid credentials")
            access = shop.token_for(account)
            return _json({"access_token": access, "token_type": "bearer", "expires_in": 900})

        # --- catalog ------------------------------------------------------------------------

        async def list_products(request: web.Request) -> web.Response:
            query = request.rel_url.query
            found = sorted(PRODUCTS.values(), key=lambda p: p["name"])
            if words := query.get("q", "").lower().split():
                found = [p for p in found if all(w in p["name"].lower() for w in words)]
            if category := query.get("category"):
                found = [p for p in found if p["category"] == category]
            start = int(query.get("cursor", "0") or 0)
            limit = int(query.get("limit", "20"))
            page = found[start : start + limit]
            more = start + limit < len(found)
            return _json({"items": page, "next_cursor": str(start + limit) if more else None})

        async def get_product(request: web.Request) -> web.Response:
            product = PRODUCTS.get(request.match_info["sku"])
            if product is None:
                return problem(404, "product-not-found", "Product not found")
            return _json(product)

        async def categories(_: web.Request) -> web.Response:
            return _json(CATEGORIES)

        # --- inventory ----------------------------------------------------------------------

        async def stock(request: web.Request) -> web.Response:
            sku = request.match_info["sku"]
            return _json({"sku": sku, "available": STOCK.get(sku, 0)})

        # --- cart ---------------------------------------------------------------------------

        async def get_cart(request: web.Request) -> web.Response:
            user = _caller(request)
            if user is None:
                return problem(401, "unauthorized", "Authentication required")
            return _json(_cart_view(shop, user))

        async def set_item(request: web.Request) -> web.Response:
            user = _caller(request)
            if user is None:
                return problem(401, "unauthorized", "Authentication required")
            sku = request.match_info["sku"]
            if sku not in PRODUCTS:
                return problem(404, "product-not-found", "Product not found")
            quantity = (await request.json())["quantity"]
            cart = shop.carts.setdefault(user, {})
            cart.pop(sku, None)
            if quantity:
                cart[sku] = quantity
            return _json(_cart_view(shop, user))

        async def remove_item(request: web.Request) -> web.Response:
            user = _caller(request)
            if user is None:
                return problem(401, "unauthorized", "Authentication required")
            shop.carts.get(user, {}).pop(request.match_info["sku"], None)
            return _json(_cart_view(shop, user))

        # --- orders -------------------------------------------------------------------------

        async def place_order(request: web.Request) -> web.Response:
            user = _caller(request)
            if user is None:
                return problem(401, "unauthorized", "Authentication required")
            key = request.headers.get("Idempotency-Key")
            if not key:
                return problem(400, "idempotency-key-required", "Idempotency-Key required")
            data = await request.json()
            address = data["shipping_address"]
            issues = [
                {
                    "loc": ["body", "shipping_address", name],
                    "msg": "String should have at least 1 character",
                    "type": "string_too_short",
                }
                for name in ("name", "line1", "city", "postal_code")
                if not address.get(name)
            ]
            digits = data["card_number"].replace(" ", "")
            if not digits.isdigit() or not 12 <= len(digits) <= 19:
                issues.append(
                    {
                        "loc": ["body", "card_number"],
                        "msg": "Value error, a card number has 12 to 19 digits",
                        "type": "value_error",
                    }
                )
            if issues:
                return problem(
                    422,
                    "validation",
                    "Invalid request",
                    "the request does not match the schema",
                    errors=issues,
                )
            if (user, key) in shop.by_key:
                return _json(shop.orders[shop.by_key[(user, key)]], 200)
            cart = _cart_view(shop, user)
            if not cart["items"]:
                return problem(422, "empty-cart", "Cart is empty")
            now = datetime.now(UTC).isoformat()
            order_id = str(uuid.uuid4())
            order = {
                "id": order_id,
                "user_id": user,
                "status": "PENDING",
                "reason": None,
                "lines": [
                    {
                        "sku": item["sku"],
                        "name": item["name"],
                        "quantity": item["quantity"],
                        "unit_price": item["unit_price"],
                        "line_total": item["line_total"],
                    }
                    for item in cart["items"]
                ],
                "total": cart["total"],
                "currency": "EUR",
                "shipping_address": address,
                "card_brand": "visa",
                "card_last4": digits[-4:],
                "placed_at": now,
                "updated_at": now,
                "deadline_at": now,
                "trace_id": None,
                "checkout": {"step": "reserving", "attempts": 1},
                "outcome": CARD_OUTCOMES.get(digits, ("CANCELLED", "payment_failed")),
            }
            shop.orders[order_id] = order
            shop.by_key[(user, key)] = order_id
            shop.carts.pop(user, None)
            return _json(_order_out(order), 202)

        def mine(request: web.Request) -> dict[str, Any] | web.Response:
            user = _caller(request)
            if user is None:
                return problem(401, "unauthorized", "Authentication required")
            order = shop.orders.get(request.match_info["id"])
            if order is None or order["user_id"] != user:
                return problem(404, "order-not-found", "Order not found")
            return order

        async def get_order(request: web.Request) -> web.Response:
            found = mine(request)
            return found if isinstance(found, web.Response) else _json(_order_out(found))

        async def list_orders(request: web.Request) -> web.Response:
            user = _caller(request)
            if user is None:
                return problem(401, "unauthorized", "Authentication required")
            own = [o for o in shop.orders.values() if o["user_id"] == user]
            own.sort(key=lambda o: o["placed_at"], reverse=True)
            return _json({"items": [_order_out(o) for o in own], "next_cursor": None})

        async def order_events(request: web.Request) -> web.StreamResponse:
            found = mine(request)
            if isinstance(found, web.Response):
                return found
            order = found
            reply = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
            )
            await reply.prepare(request)
            sent = bytearray()

            async def send(chunk: bytes) -> None:
                sent.extend(chunk)
                await reply.write(chunk)

            await send(b"retry: 1000\n\n")
            status, reason = order["outcome"]
            steps = ["reserving", "authorizing", "completing"]
            if status == "CANCELLED":
                steps = ["reserving", "authorizing", "compensating"]
            for number, step in enumerate([*steps, "done"], start=1):
                if step == "done":
                    order.update(status=status, reason=reason)
                order["checkout"] = {"step": step, "attempts": 1}
                data = orjson.dumps(_order_out(order)).decode()
                await send(f"id: {number}\nevent: status\ndata: {data}\n\n".encode())
                await asyncio.sleep(0.01)
            shop.streamed[order["id"]] = bytes(sent)
            await reply.write_eof()
            return reply

        # --- shipping -----------------------------------------------------------------------

        async def list_shipments(request: web.Request) -> web.Response:
            user = _caller(request)
            if user is None:
                return problem(401, "unauthorized", "Authentication required")
            order_id = request.rel_url.query.get("order_id", "")
            order = shop.orders.get(order_id)
            steps = shop.carrier.get(order_id)
            if order is None or order["user_id"] != user or not steps:
                return _json({"items": [], "next_cursor": None})
            status = steps.pop(0) if len(steps) > 1 else steps[0]
            if status is None:
                return _json({"items": [], "next_cursor": None})
            return _json({"items": [_shipment(order, status)], "next_cursor": None})

        # --- notifications ------------------------------------------------------------------

        async def notifications(request: web.Request) -> web.Response:
            user = _caller(request)
            if user is None:
                return problem(401, "unauthorized", "Authentication required")
            item = {
                "id": "m-1",
                "kind": "welcome",
                "order_id": None,
                "subject": "Welcome to Agora",
                "body": "Hello!\nThanks for joining.",
                "created_at": "2025-03-03T14:05:00Z",
            }
            return _json({"items": [item], "next_cursor": None})

        return [
            web.get("/readyz", ready),
            web.get("/.well-known/jwks.json", jwks),
            web.post("/users", register),
            web.post("/token", token),
            web.get("/products", list_products),
            web.get("/products/{sku}", get_product),
            web.get("/categories", categories),
            web.get("/inventory/stock/{sku}", stock),
            web.get("/cart", get_cart),
            web.put("/cart/items/{sku}", set_item),
            web.delete("/cart/items/{sku}", remove_item),
            web.post("/orders", place_order),
            web.get("/orders", list_orders),
            web.get("/orders/{id}", get_order),
            web.get("/orders/{id}/events", order_events),
            web.get("/shipments", list_shipments),
            web.get("/notifications", notifications),
        ]

    return routes


def _order_out(order: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in order.items() if k != "outcome"}


def _shipment(order: dict[str, Any], status: str) -> dict[str, Any]:
    """The order's shipment as shipping answers it: to Great Britain, by Royal Mail."""
    moved = "2025-03-04T09:00:00Z"
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, order["id"])),
        "order_id": order["id"],
        "user_id": order["user_id"],
        "status": status,
        "carrier": "royal-mail",
        "service_level": "tracked-48",
        "tracking_number": "RM" + order["id"].replace("-", "")[:16].upper(),
        "destination_country": "GB",
        "created_at": "2025-03-03T15:00:00Z",
        "dispatched_at": moved if status in ("dispatched", "delivered") else None,
        "delivered_at": moved if status == "delivered" else None,
    }
