"""The admin's listing of every account (what the consistency checker reads), on both stores."""

from __future__ import annotations

from typing import Any

import pytest

from agora_tools.testing import bearer, every_page

ADMIN_EMAIL = "root@shop.example"  # the admin the test settings create


def listed(api: Any, token: str, **query: Any) -> list[dict[str, Any]]:
    """Every account, page by page, following next_cursor."""
    pages = every_page(api.client, "/users", bearer(token), **query)
    return [account for page in pages for account in page]


def test_an_admin_pages_through_every_account_once(api: Any) -> None:
    registered = {api.register(f"shopper{n}@example.com")["id"] for n in range(7)}
    admin = api.admin_token()

    accounts = listed(api, admin, limit=3)

    ids = [account["id"] for account in accounts]
    assert len(ids) == len(set(ids)) == 8  # the seven shoppers and the admin
    assert registered < set(ids)
    assert {account["email"] for account in accounts} >= {ADMIN_EMAIL, "shopper0@example.com"}
    assert all(account["created_at"] for account in accounts)
    assert "password_hash" not in accounts[0]


def test_a_customer_may_not_list_accounts(api: Any) -> None:
    api.register("curious@example.com")
    customer = api.log_in("curious@example.com")

    assert api.client.get("/users", headers=bearer(customer)).status_code == 403
    assert api.client.get("/users").status_code == 401


@pytest.mark.parametrize(
    "query",
    [
        {"cursor": "not base64 at all!"},
        {"cursor": "%%%"},
        {"cursor": "AA"},
        {"cursor": "WyJcdTAwMDAiXQ"},  # ["\u0000"]: an id holding a NUL
        {"cursor": "WzQyXQ"},  # [42]
    ],
)
def test_a_cursor_it_never_handed_out_is_400(api: Any, query: dict[str, str]) -> None:
    reply = api.client.get("/users", params=query, headers=bearer(api.admin_token()))
    assert reply.status_code == 400, reply.text
    assert reply.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("limit", ["0", "501", "x", "-1"])
def test_a_limit_out_of_range_is_422(api: Any, limit: str) -> None:
    reply = api.client.get("/users", params={"limit": limit}, headers=bearer(api.admin_token()))
    assert reply.status_code == 422, reply.text
