"""Reading mailboxes over HTTP: a user reads their own messages, newest first, a page at a time;
an admin reads everyone's, completely, page after page."""

from __future__ import annotations

import uuid

from agora_tools.testing import User, an_order, every_page
from notifications.settings import NotificationsSettings

from .conftest import SERVICE, Bench, a_user, act

FIELDS = {"id", "kind", "order_id", "shipment_id", "subject", "body", "created_at"}


def registered(url: str, count: int) -> list[User]:
    """``count`` new users registered one after the other, each welcomed with a message."""
    users = [a_user() for _ in range(count)]

    async def register(bench: Bench) -> None:
        for user in users:
            await bench.register(user)

    act(url, register)
    return users


def test_a_user_reads_their_messages_newest_first(
    migrated: str, settings: NotificationsSettings
) -> None:
    ada = a_user()
    first, second = an_order(), an_order()

    async def events(bench: Bench) -> None:
        await bench.register(ada)
        await bench.confirm(first, ada, total=12345, currency="EUR")
        await bench.cancel(second, ada, reason="out_of_stock")

    act(migrated, events)

    with SERVICE.serving(settings) as client:
        answer = client.get("/notifications", headers=ada.headers)

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["next_cursor"] is None
    assert [set(item) for item in body["items"]] == [FIELDS] * 3
    assert [(i["kind"], i["order_id"]) for i in body["items"]] == [
        ("order_cancelled", second),
        ("order_confirmed", first),
        ("welcome", None),
    ]
    cancelled, confirmed, welcome = body["items"]
    assert cancelled["subject"] == f"Your order {second} was cancelled"
    assert "because some of the items are out of stock." in cancelled["body"]
    assert "EUR 123.45" in confirmed["body"]
    assert welcome["subject"] == "Welcome to Agora"
    assert cancelled["created_at"] >= confirmed["created_at"] >= welcome["created_at"]


def test_a_message_says_which_shipment_it_is_about_to_its_user_and_to_an_admin(
    migrated: str, settings: NotificationsSettings, admin: User
) -> None:
    ada, order_id, shipment_id = a_user(), an_order(), str(uuid.uuid4())

    async def events(bench: Bench) -> None:
        await bench.confirm(order_id, ada)
        await bench.dispatch(shipment_id, order_id, ada, tracking_number="DH0123456789ABCDEF")

    act(migrated, events)

    with SERVICE.serving(settings) as client:
        own = client.get("/notifications", headers=ada.headers).json()["items"]
        everyone = client.get("/notifications/all", headers=admin.headers).json()["items"]

    for items in (own, everyone):
        assert [(i["kind"], i["order_id"], i["shipment_id"]) for i in items] == [
            ("shipment_dispatched", order_id, shipment_id),
            ("order_confirmed", order_id, None),
        ]
    on_its_way = own[0]
    assert on_its_way["subject"] == f"Your order {order_id} is on its way"
    assert "tracking number DH0123456789ABCDEF" in on_its_way["body"]
    assert everyone[0]["user_id"] == ada.id


def test_two_users_never_see_each_others_messages(
    migrated: str, settings: NotificationsSettings, admin: User
) -> None:
    ada, bob = a_user(), a_user()
    adas, bobs = an_order(), an_order()

    async def events(bench: Bench) -> None:
        await bench.confirm(adas, ada)
        await bench.cancel(bobs, bob)

    act(migrated, events)

    with SERVICE.serving(settings) as client:
        for_ada = client.get("/notifications", headers=ada.headers).json()["items"]
        for_bob = client.get("/notifications", headers=bob.headers).json()["items"]
        for_admin = client.get("/notifications", headers=admin.headers).json()["items"]

    assert [item["order_id"] for item in for_ada] == [adas]
    assert [item["order_id"] for item in for_bob] == [bobs]
    assert for_admin == []  # an admin's own mailbox is empty: every mailbox is at /all


def test_a_mailbox_pages_through_every_message_once(
    migrated: str, settings: NotificationsSettings
) -> None:
    ada = a_user()
    orders = [an_order() for _ in range(7)]

    async def events(bench: Bench) -> None:
        await bench.register(ada)
        for order_id in orders:
            await bench.confirm(order_id, ada)

    act(migrated, events)

    with SERVICE.serving(settings) as client:
        pages = every_page(client, "/notifications", ada.headers, limit=3)
        whole = client.get("/notifications", headers=ada.headers).json()["items"]

    assert [len(page) for page in pages] == [3, 3, 2]
    assert [item for page in pages for item in page] == whole
    assert [item["order_id"] for item in whole] == [*reversed(orders), None]


def test_an_admin_reads_every_mailbox_and_one_users(
    migrated: str, settings: NotificationsSettings, admin: User
) -> None:
    ada, bob = a_user(), a_user()
    adas = an_order()

    async def events(bench: Bench) -> None:
        await bench.register(ada)
        await bench.register(bob)
        await bench.confirm(adas, ada)

    act(migrated, events)

    with SERVICE.serving(settings) as client:
        everyone = [
            i for page in every_page(client, "/notifications/all", admin.headers) for i in page
        ]
        adas_only = every_page(client, "/notifications/all", admin.headers, user_id=ada.id, limit=1)

    assert [(i["user_id"], i["kind"]) for i in everyone] == [
        (ada.id, "order_confirmed"),
        (bob.id, "welcome"),
        (ada.id, "welcome"),
    ]
    assert set(everyone[0]) == FIELDS | {"user_id", "delivery"}
    assert everyone[0]["delivery"] == {
        "status": "pending",
        "attempts": 0,
        "last_error": None,
        "sent_at": None,
    }
    assert [[(i["user_id"], i["order_id"]) for i in page] for page in adas_only] == [
        [(ada.id, adas)],
        [(ada.id, None)],
    ]


def test_the_admin_listing_stays_complete_while_messages_come_in(
    migrated: str, settings: NotificationsSettings, admin: User
) -> None:
    users = registered(migrated, 6)
    late = a_user()
    read: list[str] = []

    with SERVICE.serving(settings) as client:
        cursor: str | None = None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = client.get("/notifications/all", params=params, headers=admin.headers).json()
            read += [item["user_id"] for item in page["items"]]
            if len(read) == 2:
                act(migrated, lambda bench: bench.register(late))
            cursor = page["next_cursor"]
            if cursor is None:
                break
        again = [
            i["user_id"] for p in every_page(client, "/notifications/all", admin.headers) for i in p
        ]

    # The message that came in during the read is newer than the first page: that read skips
    # it, but misses and repeats nothing of what was there; the next read has it first.
    assert read == [user.id for user in reversed(users)]
    assert again == [late.id, *read]


def test_a_limit_above_one_hundred_is_served_as_one_hundred(
    migrated: str, settings: NotificationsSettings, admin: User
) -> None:
    registered(migrated, 101)

    with SERVICE.serving(settings) as client:
        answer = client.get("/notifications/all", params={"limit": 500}, headers=admin.headers)
        default = client.get("/notifications/all", headers=admin.headers)

    assert answer.status_code == 200
    assert len(answer.json()["items"]) == 100
    assert answer.json()["next_cursor"] is not None
    assert len(default.json()["items"]) == 50
