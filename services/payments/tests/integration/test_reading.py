"""Reading payments and the ledger over HTTP: a customer sees their own payments only, an admin
sees everything and pages through it, and bad input is a 4xx problem."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from agora_tools.testing import User, an_order, assert_problem, bearer, every_page
from payments.settings import PaymentsSettings

from .conftest import DECLINED, SERVICE, Seeded, a_user, seed, sign

FIELDS = {
    "id",
    "order_id",
    "amount",
    "currency",
    "card_brand",
    "card_last4",
    "status",
    "captured_amount",
    "refunded_amount",
    "created_at",
    "updated_at",
}


def all_pages(client: TestClient, path: str, user: User, **params: Any) -> list[dict[str, Any]]:
    """The items of every page of a listing, in order, following its cursors."""
    return [item for page in every_page(client, path, user.headers, **params) for item in page]


def test_a_customer_sees_their_own_payments_and_nobody_elses(
    migrated: str, settings: PaymentsSettings, admin: User
) -> None:
    ada, bob = a_user(), a_user()
    adas, bobs = an_order(), an_order()
    seed(migrated, Seeded(adas, ada, amount=4990, then=("capture",)), Seeded(bobs, bob))

    with SERVICE.serving(settings) as client:
        mine = client.get("/payments", params={"order_id": adas}, headers=ada.headers)
        theirs = client.get("/payments", params={"order_id": bobs}, headers=ada.headers)
        all_mine = client.get("/payments", headers=ada.headers)
        everyone = client.get("/payments", headers=admin.headers)
        bobs_for_admin = client.get("/payments", params={"order_id": bobs}, headers=admin.headers)

    assert mine.status_code == 200
    (payment,) = mine.json()["items"]
    assert set(payment) == FIELDS
    assert payment["order_id"] == adas
    assert payment["amount"] == 4990
    assert payment["currency"] == "EUR"
    assert payment["status"] == "captured"
    assert payment["captured_amount"] == 4990
    assert payment["refunded_amount"] == 0
    assert (payment["card_brand"], payment["card_last4"]) == ("visa", "4242")
    assert theirs.json() == {"items": [], "next_cursor": None}
    assert [p["order_id"] for p in all_mine.json()["items"]] == [adas]
    assert {p["order_id"] for p in everyone.json()["items"]} == {adas, bobs}
    assert [p["status"] for p in bobs_for_admin.json()["items"]] == ["authorized"]


def test_an_admin_pages_through_every_payment_and_a_customer_through_theirs(
    migrated: str, settings: PaymentsSettings, admin: User
) -> None:
    ada, bob = a_user(), a_user()
    adas = [an_order() for _ in range(5)]
    bobs = [an_order() for _ in range(2)]
    seed(
        migrated,
        *(Seeded(order_id, ada) for order_id in adas),
        *(Seeded(order_id, bob, card=DECLINED) for order_id in bobs),
    )

    with SERVICE.serving(settings) as client:
        first = client.get("/payments", params={"limit": 3}, headers=admin.headers).json()
        everything = all_pages(client, "/payments", admin, limit=3)
        adas_pages = all_pages(client, "/payments", ada, limit=2)

    assert len(first["items"]) == 3
    assert first["next_cursor"]
    assert sorted(p["order_id"] for p in everything) == sorted(adas + bobs)
    assert sorted(p["order_id"] for p in adas_pages) == sorted(adas)


def test_the_ledger_sums_every_account_from_its_entries(
    migrated: str, settings: PaymentsSettings, admin: User
) -> None:
    captured, voided, refunded = an_order(), an_order(), an_order()
    user = a_user()
    seed(
        migrated,
        Seeded(captured, user, amount=1000, then=("capture",)),
        Seeded(voided, user, amount=300, then=("void",)),
        Seeded(refunded, user, amount=250, then=("capture", "refund")),
    )

    with SERVICE.serving(settings) as client:
        ledger = client.get("/payments/ledger", headers=admin.headers)

    assert ledger.status_code == 200
    body = ledger.json()
    balances = {account["account"]: account["balance"] for account in body["accounts"]}
    assert balances == {
        "card_authorizations": 0,
        "customer_cards": 0,
        "processor_receivable": 1000,
        "sales": -1000,
    }
    assert body["debits"] == body["credits"] == 1000 + 1000 + 1000 + 300 + 300 + 250 * 4
    # captured: hold, release, capture; voided: hold, release; refunded: those three and refund
    assert body["movements"] == 3 + 2 + 4
    for account in body["accounts"]:
        assert account["balance"] == account["debits"] - account["credits"]


def test_the_movements_of_an_order_come_with_their_two_entries(
    migrated: str, settings: PaymentsSettings, admin: User
) -> None:
    order_id, other = an_order(), an_order()
    user = a_user()
    seed(
        migrated,
        Seeded(order_id, user, amount=700, then=("capture",)),
        Seeded(other, user, then=("void",)),
    )

    with SERVICE.serving(settings) as client:
        movements = all_pages(
            client, "/payments/ledger/movements", admin, order_id=order_id, limit=1
        )
        everything = all_pages(client, "/payments/ledger/movements", admin)

    assert [m["kind"] for m in movements] == ["hold", "release", "capture"]
    assert {m["order_id"] for m in movements} == {order_id}
    assert [(e["account"], e["debit"], e["credit"]) for e in movements[2]["entries"]] == [
        ("processor_receivable", 700, 0),
        ("sales", 0, 700),
    ]
    for movement in movements:
        assert movement["amount"] == 700
        assert movement["currency"] == "EUR"
        assert sum(e["debit"] for e in movement["entries"]) == 700
        assert sum(e["credit"] for e in movement["entries"]) == 700
    assert len(everything) == 5


@pytest.mark.parametrize(
    "path",
    ["/payments", "/payments/ledger", "/payments/ledger/movements"],
)
def test_without_a_token_every_read_is_a_401(shared: TestClient, path: str) -> None:
    answer = shared.get(path)

    assert_problem(answer, 401)


@pytest.mark.parametrize("path", ["/payments/ledger", "/payments/ledger/movements"])
def test_the_ledger_is_for_admins_only(shared: TestClient, customer: User, path: str) -> None:
    answer = shared.get(path, headers=customer.headers)

    assert_problem(answer, 403)


def test_a_bad_token_is_a_401(shared: TestClient) -> None:
    answer = shared.get("/payments", headers=bearer(sign(["customer"], exp=1)))

    assert answer.status_code == 401


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/payments", {"limit": 0}, 422),
        ("/payments", {"limit": 501}, 422),
        ("/payments", {"limit": "many"}, 422),
        ("/payments", {"cursor": "not-a-cursor"}, 400),
        ("/payments", {"cursor": "WyJ4Il0"}, 400),  # ["x"]: not a payments cursor
        ("/payments", {"cursor": "WyJ4IiwieSJd"}, 400),  # ["x","y"]: no time in it
        ("/payments", {"order_id": "x" * 101}, 422),
        ("/payments/ledger/movements", {"limit": 0}, 422),
        ("/payments/ledger/movements", {"cursor": "WyJ4IiwieSJd"}, 400),
        # [9223372036854775808]: beyond a 64-bit column, it would overflow in the driver.
        ("/payments/ledger/movements", {"cursor": "WzkyMjMzNzIwMzY4NTQ3NzU4MDhd"}, 400),
        # A moment without a time zone.
        ("/payments", {"cursor": "WyIyMDI2LTAxLTAxVDAwOjAwOjAwIiwicC0xIl0"}, 400),
    ],
)
def test_bad_paging_is_a_problem_not_a_crash(
    shared: TestClient, admin: User, path: str, params: dict[str, Any], status: int
) -> None:
    answer = shared.get(path, params=params, headers=admin.headers)

    assert_problem(answer, status)


def test_an_empty_filter_means_no_filter(
    migrated: str, settings: PaymentsSettings, admin: User
) -> None:
    order_id = an_order()
    seed(migrated, Seeded(order_id, a_user()))

    with SERVICE.serving(settings) as client:
        answer = client.get(
            "/payments", params={"order_id": "", "cursor": ""}, headers=admin.headers
        )

    assert [p["order_id"] for p in answer.json()["items"]] == [order_id]
