"""The storefront, driven as a browser drives it: pages, cookies, forms and redirects, against
fakes of the services (``shop.py``) served over HTTP."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from agora_tools.testing import free_port

from .conftest import Upstream
from .shop import PRODUCTS, Account, Shop, shop_routes

if TYPE_CHECKING:
    from .conftest import Keys, StartGateway

PASSWORD = "correct horse battery"
ADDRESS = {
    "name": "Ada Lovelace",
    "line1": "12 St James's Square",
    "line2": "",
    "city": "London",
    "postal_code": "SW1Y 4JH",
    "country": "gb",
}
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_KEY = re.compile(r'name="idempotency_key" value="([^"]+)"')


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shop(keys: Keys) -> Shop:
    return Shop(keys)


@pytest.fixture(scope="module")
def services(shop: Shop) -> Iterator[Upstream]:
    upstream = Upstream(shop_routes(shop)).start()
    yield upstream
    upstream.stop()


def urls(services: Upstream, *down: str) -> dict[str, list[str]]:
    """Every service at the fake, but those in ``down`` at a port where nothing listens."""
    names = ("identity", "catalog", "inventory", "cart", "orders", "shipping", "notifications")
    dead = f"http://127.0.0.1:{free_port()}"
    return {name: [dead if name in down else services.url] for name in names}


Browser = Callable[..., httpx.Client]


@pytest.fixture
def browser(start_gateway: StartGateway, services: Upstream) -> Browser:
    """A gateway in front of the fakes (``down``: services that do not answer), and a client
    that keeps cookies as a browser does and follows no redirect by itself."""

    def start(*down: str, **overrides: Any) -> httpx.Client:
        return start_gateway(service_urls=urls(services, *down), **overrides)

    return start


@pytest.fixture
def account(shop: Shop) -> Account:
    return shop.add_account(f"{uuid.uuid4().hex[:8]}@example.com", PASSWORD)


# --- helpers ------------------------------------------------------------------------------------


def csrf(page: httpx.Response) -> str:
    found = _CSRF.search(page.text)
    assert found, "the page holds no form with a CSRF token"
    return found.group(1)


def submit(client: httpx.Client, page: httpx.Response, path: str, **fields: str) -> httpx.Response:
    """Post ``fields`` to ``path`` as the form on ``page`` does, with the page's CSRF token."""
    return client.post(path, data={**fields, "csrf_token": csrf(page)})


def log_in(client: httpx.Client, account: Account) -> None:
    form = client.get("/login")
    reply = submit(client, form, "/login", email=account.email, password=PASSWORD, next="/")
    assert reply.status_code == 303, reply.text


def logged_in(browser: Browser, account: Account, *down: str) -> httpx.Client:
    """A browser on a gateway of its own (``down``: services that do not answer), logged in as
    ``account``."""
    client = browser(*down)
    log_in(client, account)
    return client


def add_to_cart(client: httpx.Client, sku: str, quantity: int = 1) -> httpx.Response:
    page = client.get(f"/products/{sku}")
    return submit(client, page, "/cart/items", sku=sku, quantity=str(quantity))


def check_out(
    client: httpx.Client, card: str = "4242 4242 4242 4242", **changes: str
) -> httpx.Response:
    page = client.get("/checkout")
    key = _KEY.search(page.text)
    assert key, page.text
    form = {**ADDRESS, "card_number": card, "idempotency_key": key.group(1), **changes}
    return submit(client, page, "/checkout", **form)


def an_order(client: httpx.Client, sku: str = "COF-BEANS-BRAZIL") -> tuple[str, str]:
    """One unit of ``sku`` checked out: the order page's path, and the order's id."""
    add_to_cart(client, sku)
    path = check_out(client).headers["location"]
    return path, path.rsplit("/", 1)[-1]


def texts_of(page: httpx.Response, name: str) -> list[str]:
    """The text of each element with ``data-testid=name``."""
    pattern = re.compile(rf'data-testid="{name}"[^>]*>([^<]*)<')
    return [text.strip() for text in pattern.findall(page.text)]


def events_in(stream: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Each event of a server-sent ``stream`` with data: its name and its data, read as JSON."""
    found = []
    for block in stream.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            found.append((fields.get("event", "message"), json.loads(fields["data"])))
    return found


def is_page(reply: httpx.Response) -> bool:
    return reply.headers["content-type"].startswith("text/html") and "Traceback" not in reply.text


# --- browsing -----------------------------------------------------------------------------------


def test_the_home_page_lists_the_products(browser: Browser) -> None:
    page = browser().get("/")

    assert page.status_code == 200
    assert is_page(page)
    assert page.text.count('data-testid="product-card"') == len(PRODUCTS)
    assert "Brazil Coffee Beans" in page.text
    assert "€12.50" in page.text
    assert 'src="/products/COF-BEANS-BRAZIL/image.svg"' in page.text
    # a path to a file the gateway does not have would be a broken image: the placeholder
    assert 'src="/products/TEA-GREEN-SENCHA/image.svg"' in page.text
    assert 'src="https://images.example/grinder-burr.jpg"' in page.text
    assert 'href="/products/COF-BEANS-BRAZIL"' in page.text
    assert '<meta name="viewport"' in page.text


def test_search_and_category_are_passed_on_to_the_catalogue(
    browser: Browser, services: Upstream
) -> None:
    page = browser().get("/", params={"q": "coffee", "category": "coffee-tea"})

    asked = [s.path_qs for s in services.seen if s.path_qs.startswith("/products?")]
    query = parse_qs(urlsplit(asked[-1]).query)
    assert query["q"] == ["coffee"]
    assert query["category"] == ["coffee-tea"]
    assert page.text.count('data-testid="product-card"') == 1
    assert "Results for “coffee”" in page.text


def test_the_listing_pages_on(browser: Browser) -> None:
    client = browser(storefront_page_size=2)

    first = client.get("/")
    link = re.search(r'href="([^"]+)" rel="next"', first.text)
    assert first.text.count('data-testid="product-card"') == 2
    assert link
    second = client.get(link.group(1).replace("&amp;", "&"))

    assert second.text.count('data-testid="product-card"') == 1
    assert 'rel="next"' not in second.text


def test_a_product_page_shows_the_product_and_its_stock(browser: Browser) -> None:
    client = browser()

    page = client.get("/products/COF-BEANS-BRAZIL")
    sold_out = client.get("/products/GRINDER-BURR")

    assert page.status_code == 200
    assert "All about Brazil Coffee Beans." in page.text
    assert texts_of(page, "stock") == ["In stock"]
    assert 'action="/cart/items"' in page.text
    assert 'for="f-quantity"' in page.text
    assert texts_of(sold_out, "stock") == ["Out of stock"]
    assert "Add to cart" not in sold_out.text


def test_without_inventory_the_stock_is_unknown(browser: Browser) -> None:
    page = browser("inventory").get("/products/COF-BEANS-BRAZIL")

    assert page.status_code == 200
    assert texts_of(page, "stock") == ["Stock unknown"]


def test_an_unknown_product_is_a_404_page(browser: Browser) -> None:
    page = browser().get("/products/NO-SUCH-THING")

    assert page.status_code == 404
    assert is_page(page)
    assert "There is no such product in the shop." in page.text


def test_an_unknown_address_is_a_404_page_and_the_api_keeps_problems(browser: Browser) -> None:
    client = browser()

    page = client.get("/no/such/page", headers={"accept": "text/html"})
    api = client.get("/api/nothing")

    assert page.status_code == 404
    assert is_page(page)
    assert api.status_code == 404
    assert api.headers["content-type"] == "application/problem+json"


def test_a_service_that_is_down_gives_a_503_page(browser: Browser) -> None:
    page = browser("catalog").get("/")

    assert page.status_code == 503
    assert is_page(page)
    assert "The catalogue is unavailable right now, try again in a moment." in page.text


def test_the_placeholder_image_is_an_svg_of_the_initials(browser: Browser) -> None:
    client = browser()

    image = client.get("/products/COF-BEANS-BRAZIL/image.svg")
    again = client.get(
        "/products/COF-BEANS-BRAZIL/image.svg", headers={"if-none-match": image.headers["etag"]}
    )
    other = client.get("/products/GRINDER-BURR/image.svg")
    unknown = client.get("/products/NO-SUCH-THING/image.svg")

    assert image.status_code == 200
    assert image.headers["content-type"].startswith("image/svg+xml")
    assert ">BC</text>" in image.text
    assert "<title>Brazil Coffee Beans</title>" in image.text
    assert "max-age" in image.headers["cache-control"]
    assert again.status_code == 304
    assert re.search(r'fill="(hsl[^"]+)"', image.text) != re.search(
        r'fill="(hsl[^"]+)"', other.text
    )
    assert unknown.status_code == 404


# --- signing in ---------------------------------------------------------------------------------


def test_logging_in_sets_an_httponly_samesite_session_cookie(
    browser: Browser, account: Account
) -> None:
    client = browser()
    form = client.get("/login", params={"next": "/orders"})

    reply = submit(client, form, "/login", email=account.email, password=PASSWORD, next="/orders")

    assert reply.status_code == 303
    assert reply.headers["location"] == "/orders"
    cookie = next(c for c in reply.headers.get_list("set-cookie") if c.startswith("agora_session="))
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=lax", "path=/", "max-age=900"} <= attributes
    assert "secure" not in attributes  # plain http here
    nonce = next(c for c in form.headers.get_list("set-cookie") if c.startswith("agora_csrf="))
    assert {"httponly", "samesite=strict", "path=/"} <= {
        part.strip().lower() for part in nonce.split(";")
    }
    home = client.get("/")
    assert account.email in home.text
    assert 'action="/logout"' in home.text


def test_a_wrong_password_is_said_on_the_login_page(browser: Browser, account: Account) -> None:
    client = browser()
    form = client.get("/login")

    reply = submit(client, form, "/login", email=account.email, password="nope")

    assert reply.status_code == 422
    assert texts_of(reply, "form-error") == ["Wrong email or password."]
    assert "agora_session" not in reply.headers.get("set-cookie", "")


def test_a_login_refused_because_identity_is_busy_says_so_not_that_the_shopper_failed(
    browser: Browser, account: Account, shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = browser()
    form = client.get("/login")
    # The fake services serve the whole module: the busy spell ends with this test.
    monkeypatch.setattr(shop, "hashing_busy", True)

    reply = submit(client, form, "/login", email=account.email, password=account.password)
    registering = submit(
        client, form, "/register", email="new@example.com", password="long enough pass"
    )

    assert texts_of(reply, "form-error") == [
        "The shop is busy checking passwords; try again in 1 second."
    ]
    assert texts_of(registering, "form-error") == [
        "The shop is busy checking passwords; try again in 1 second."
    ]


def test_login_goes_back_only_to_pages_of_the_shop(browser: Browser, account: Account) -> None:
    client = browser()
    form = client.get("/login")

    reply = submit(
        client, form, "/login", email=account.email, password=PASSWORD, next="//evil.example/x"
    )

    assert reply.headers["location"] == "/"


def test_registering_logs_in(browser: Browser) -> None:
    client = browser()
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    form = client.get("/register")

    weak = submit(client, form, "/register", email=email, password="short")
    done = submit(client, weak, "/register", email=email, password=PASSWORD)

    assert weak.status_code == 422
    assert texts_of(weak, "form-error") == ["A password needs at least 10 characters."]
    assert f'value="{email}"' in weak.text
    assert done.status_code == 303
    assert email in client.get("/").text


@pytest.mark.parametrize("token", [None, "forged.token", "AAAAAAAAAAAAAAAAAAAAAAAA.0000"])
def test_a_form_without_its_csrf_token_is_refused(
    browser: Browser, account: Account, token: str | None
) -> None:
    client = browser()
    client.get("/login")  # the nonce cookie
    data = {"email": account.email, "password": PASSWORD}
    if token is not None:
        data["csrf_token"] = token

    reply = client.post("/login", data=data)

    assert reply.status_code == 403
    assert is_page(reply)
    assert "The form expired; reload the page and try again." in reply.text
    assert "agora_session" not in reply.headers.get("set-cookie", "")


def test_a_csrf_token_is_bound_to_its_session(browser: Browser, account: Account) -> None:
    client = browser()
    anonymous_token = csrf(client.get("/login"))
    log_in(client, account)

    reply = client.post("/logout", data={"csrf_token": anonymous_token})

    assert reply.status_code == 403


def test_logging_out_ends_the_session(browser: Browser, account: Account) -> None:
    client = logged_in(browser, account)

    reply = submit(client, client.get("/"), "/logout")

    assert reply.status_code == 303
    assert 'agora_session=""' in reply.headers["set-cookie"]
    assert account.email not in client.get("/").text


def test_an_expired_session_goes_to_the_login_page_saying_so(
    browser: Browser, shop: Shop, account: Account
) -> None:
    client = browser()
    client.cookies.set(
        "agora_session", shop.token_for(account, expires_in=-60), domain="127.0.0.1", path="/"
    )

    reply = client.get("/orders")

    assert reply.status_code == 303
    assert reply.headers["location"] == "/login?next=%2Forders&expired=1"
    assert 'agora_session=""' in reply.headers["set-cookie"]
    login = client.get(reply.headers["location"])
    assert texts_of(login, "form-error") == ["Your session expired; log in again to continue."]
    assert 'name="next" value="/orders"' in login.text


def test_pages_of_a_user_need_one(browser: Browser) -> None:
    reply = browser().get("/cart")

    assert reply.status_code == 303
    assert reply.headers["location"] == "/login?next=%2Fcart"


# --- the cart -----------------------------------------------------------------------------------


def test_adding_to_the_cart_when_anonymous_logs_in_first(browser: Browser) -> None:
    client = browser()

    reply = add_to_cart(client, "COF-BEANS-BRAZIL")

    assert reply.status_code == 303
    assert reply.headers["location"] == "/login?next=%2Fproducts%2FCOF-BEANS-BRAZIL"


def test_adding_to_the_cart(browser: Browser, account: Account, services: Upstream) -> None:
    client = logged_in(browser, account)

    first = add_to_cart(client, "COF-BEANS-BRAZIL", 2)
    add_to_cart(client, "COF-BEANS-BRAZIL", 1)
    cart = client.get("/cart")

    assert first.status_code == 303
    assert first.headers["location"] == "/cart"
    puts = [s for s in services.seen if s.method == "PUT"]
    assert [s.body for s in puts[-2:]] == [b'{"quantity":2}', b'{"quantity":3}']
    assert 'data-sku="COF-BEANS-BRAZIL"' in cart.text
    assert texts_of(cart, "cart-count") == ["3"]
    assert texts_of(cart, "cart-total") == ["€37.50"]


def test_changing_and_removing_cart_lines(browser: Browser, account: Account) -> None:
    client = logged_in(browser, account)
    add_to_cart(client, "COF-BEANS-BRAZIL")
    add_to_cart(client, "TEA-GREEN-SENCHA")
    cart = client.get("/cart")

    bad = submit(client, cart, "/cart/items/COF-BEANS-BRAZIL", quantity="many")
    changed = submit(client, cart, "/cart/items/COF-BEANS-BRAZIL", quantity="4")
    removed = submit(client, cart, "/cart/items/TEA-GREEN-SENCHA/remove")
    after = client.get("/cart")

    assert bad.status_code == 422
    assert texts_of(bad, "form-error")
    assert changed.status_code == removed.status_code == 303
    assert texts_of(after, "cart-count") == ["4"]
    assert "Green Sencha Tea" not in after.text


# --- checkout and orders ------------------------------------------------------------------------


def test_checkout_with_an_empty_cart_says_so(browser: Browser, account: Account) -> None:
    client = logged_in(browser, account)

    page = client.get("/checkout")

    assert page.status_code == 200
    assert 'data-testid="checkout-empty"' in page.text
    assert 'action="/checkout"' not in page.text


def test_checkout_lists_the_test_cards(browser: Browser, account: Account) -> None:
    client = logged_in(browser, account)
    add_to_cart(client, "COF-BEANS-BRAZIL")

    page = client.get("/checkout")

    for card in ("4242 4242 4242 4242", "4000 0000 0000 0002", "4000 0000 0000 9995"):
        assert card in page.text
    assert 'for="f-city"' in page.text
    assert 'id="f-city"' in page.text


def test_a_refused_checkout_shows_the_message_beside_the_field(
    browser: Browser, account: Account
) -> None:
    client = logged_in(browser, account)
    add_to_cart(client, "COF-BEANS-BRAZIL")

    page = check_out(client, city="")

    assert page.status_code == 422
    assert is_page(page)
    assert re.search(r'data-testid="form-error" data-field="city">Fill this in\.<', page.text)
    assert 'value="Ada Lovelace"' in page.text  # what was typed is kept...
    assert "4242" not in re.sub(r"<code>[^<]*</code>", "", page.text)  # ...but the card number


def test_checkout_places_the_order_once_and_shows_it(
    browser: Browser, account: Account, services: Upstream
) -> None:
    client = logged_in(browser, account)
    add_to_cart(client, "COF-BEANS-BRAZIL", 2)
    page = client.get("/checkout")
    form = {**ADDRESS, "card_number": "4242 4242 4242 4242", "csrf_token": csrf(page)}
    form["idempotency_key"] = _KEY.search(page.text).group(1)  # type: ignore[union-attr]

    placed = client.post("/checkout", data=form)
    again = client.post("/checkout", data=form)  # a double submit

    assert placed.status_code == again.status_code == 303
    assert placed.headers["location"] == again.headers["location"]
    order_id = placed.headers["location"].rsplit("/", 1)[-1]
    sent = [s for s in services.seen if s.method == "POST" and s.path_qs == "/orders"]
    assert sent[-1].headers["Idempotency-Key"] == form["idempotency_key"]
    assert b'"country":"GB"' in sent[-1].body
    assert b'"line2":null' in sent[-1].body
    order = client.get(placed.headers["location"])
    assert order.status_code == 200
    assert texts_of(order, "order-status") == ["PENDING"]
    assert texts_of(order, "order-card") == ["Visa ending in 4242"]
    assert texts_of(order, "order-total") == ["€25.00"]
    assert f'data-order-live="/orders/{order_id}/live"' in order.text
    assert 'data-testid="trace-link"' not in order.text
    assert order_id in client.get("/orders").text


def test_the_live_route_passes_the_order_events_through(
    browser: Browser, account: Account, shop: Shop
) -> None:
    client = logged_in(browser, account)
    order_path, order_id = an_order(client)
    shop.carrier[order_id] = ["delivered"]  # so the stream ends with its shipment

    with client.stream("GET", f"{order_path}/live") as live:
        received = b"".join(live.iter_bytes())

    assert live.status_code == 200
    assert live.headers["content-type"].startswith("text/event-stream")
    assert received.startswith(shop.streamed[order_id])
    assert b'"status":"CONFIRMED"' in received
    assert texts_of(client.get(order_path), "order-status") == ["CONFIRMED"]


def test_the_live_route_follows_a_confirmed_orders_shipment_until_it_is_delivered(
    browser: Browser, account: Account, shop: Shop
) -> None:
    client = logged_in(browser, account)
    order_path, order_id = an_order(client)
    shop.carrier[order_id] = [None, "label_created", "dispatched", "delivered"]

    with client.stream("GET", f"{order_path}/live") as live:
        received = b"".join(live.iter_bytes())  # it ends once the parcel is delivered

    shipped = [data for name, data in events_in(received) if name == "shipment"]
    assert [(d["state"], d["status"]) for d in shipped] == [
        ("awaiting", ""),
        ("shipped", "label_created"),
        ("shipped", "dispatched"),
        ("shipped", "delivered"),
    ]
    assert shipped[0]["note"].startswith("Your parcel is being prepared")
    assert shipped[-1]["status_text"] == "Delivered"
    assert shipped[-1]["tracking_number"].startswith("RM")
    assert shipped[-1]["final"] is True
    page = client.get(order_path)
    assert texts_of(page, "shipment-status") == ["Delivered"]
    assert "data-delivery-final" in page.text


def test_the_live_route_says_when_shipping_does_not_answer(
    browser: Browser, account: Account
) -> None:
    client = logged_in(browser, account, "shipping")
    order_path, _ = an_order(client)

    received = b""
    with client.stream("GET", f"{order_path}/live") as live:
        for chunk in live.iter_bytes():
            received += chunk
            if b"event: shipment" in received and received.endswith(b"\n\n"):
                break  # it would go on asking shipping

    assert live.status_code == 200
    shipped = [data for name, data in events_in(received) if name == "shipment"]
    assert [d["state"] for d in shipped] == ["unavailable"]
    assert "unavailable right now" in shipped[0]["note"]


def test_the_order_page_shows_the_shipment_with_its_status_and_tracking_number(
    browser: Browser, account: Account, shop: Shop, services: Upstream
) -> None:
    client = logged_in(browser, account)
    order_path, order_id = an_order(client)
    shop.confirm(order_id)
    shop.carrier[order_id] = ["dispatched"]

    page = client.get(order_path)

    assert page.status_code == 200
    assert texts_of(page, "shipment-status") == ["Dispatched: on its way with the carrier"]
    assert texts_of(page, "shipment-carrier") == ["Royal Mail, Tracked 48"]
    tracking = "RM" + order_id.replace("-", "")[:16].upper()
    assert texts_of(page, "tracking-number") == [tracking]
    assert 'data-delivery-state="shipped"' in page.text
    assert services.requests_to(f"/shipments?order_id={order_id}&limit=1")


def test_before_shipping_made_the_shipment_the_page_says_so(
    browser: Browser, account: Account, shop: Shop, services: Upstream
) -> None:
    client = logged_in(browser, account)
    order_path, order_id = an_order(client)

    pending = client.get(order_path)
    shop.confirm(order_id)
    confirmed = client.get(order_path)

    assert texts_of(pending, "delivery-note") == ["Shipping starts once the order is confirmed."]
    assert texts_of(confirmed, "delivery-note") == [
        "Your parcel is being prepared; its tracking number will show here."
    ]
    for page in (pending, confirmed):
        assert page.status_code == 200
        assert 'data-delivery-state="awaiting"' in page.text
        assert re.search(r'data-testid="shipment" hidden', page.text)
    # A pending order has no shipment to ask shipping about.
    assert len(services.requests_to(f"/shipments?order_id={order_id}&limit=1")) == 1


def test_without_shipping_the_order_page_still_shows_and_says_so(
    browser: Browser, account: Account, shop: Shop
) -> None:
    client = logged_in(browser, account, "shipping")
    order_path, order_id = an_order(client)
    shop.confirm(order_id)

    page = client.get(order_path)

    assert page.status_code == 200
    assert is_page(page)
    assert texts_of(page, "order-status") == ["CONFIRMED"]
    assert texts_of(page, "delivery-note") == [
        "Delivery details are unavailable right now; they will show here once shipping "
        "answers again."
    ]
    assert texts_of(page, "order-total") == ["€12.50"]


def test_a_cancelled_order_says_why(browser: Browser, account: Account) -> None:
    client = logged_in(browser, account)
    add_to_cart(client, "COF-BEANS-BRAZIL")
    order_path = check_out(client, card="4000 0000 0000 0002").headers["location"]
    with client.stream("GET", f"{order_path}/live") as live:
        live.read()

    page = client.get(order_path)

    assert texts_of(page, "order-status") == ["CANCELLED"]
    assert texts_of(page, "cancel-reason") == ["Your card was declined."]
    assert 'data-testid="delivery"' not in page.text  # nothing will be shipped


def test_another_users_order_is_a_404_page(browser: Browser, account: Account, shop: Shop) -> None:
    owner = browser()
    log_in(owner, account)
    add_to_cart(owner, "COF-BEANS-BRAZIL")
    order_path = check_out(owner).headers["location"]
    stranger = browser()
    log_in(stranger, shop.add_account(f"{uuid.uuid4().hex[:8]}@example.com", PASSWORD))

    page = stranger.get(order_path)
    live = stranger.get(f"{order_path}/live")

    assert page.status_code == 404
    assert is_page(page)
    assert "There is no such order in your account." in page.text
    assert live.status_code == 404


def test_an_admin_sees_the_console_and_the_checkout_trace(browser: Browser, shop: Shop) -> None:
    admin = shop.add_account(f"{uuid.uuid4().hex[:8]}@example.com", PASSWORD, ("admin",))
    client = browser()
    log_in(client, admin)
    order_path, _ = an_order(client)

    page = client.get(order_path)

    assert 'href="/console"' in page.text
    order_id = order_path.rsplit("/", 1)[-1]
    assert f'href="/console/orders/{order_id}/trace"' in page.text


def test_the_messages_page_shows_the_mailbox(browser: Browser, account: Account) -> None:
    client = logged_in(browser, account)

    page = client.get("/messages")

    assert page.status_code == 200
    assert "Welcome to Agora" in page.text
    assert "3 Mar 2025, 14:05 UTC" in page.text


def test_a_cart_that_cannot_be_reached_gives_a_503_page(browser: Browser, account: Account) -> None:
    client = logged_in(browser, account, "cart")

    page = client.get("/cart")

    assert page.status_code == 503
    assert is_page(page)
    assert "Your cart is unavailable right now, try again in a moment." in page.text


def test_checking_out_a_cart_emptied_meanwhile_says_so(browser: Browser, account: Account) -> None:
    client = logged_in(browser, account)
    add_to_cart(client, "COF-BEANS-BRAZIL")
    page = client.get("/checkout")
    submit(client, page, "/cart/items/COF-BEANS-BRAZIL/remove")
    key = _KEY.search(page.text)
    assert key

    reply = submit(
        client,
        page,
        "/checkout",
        **ADDRESS,
        card_number="4242 4242 4242 4242",
        idempotency_key=key.group(1),
    )

    assert reply.status_code == 422
    assert texts_of(reply, "form-error") == [
        "Your cart is empty: add something before checking out."
    ]
