"""Bad input and missing rights: each is a 4xx problem, never a 500.

These tests share one app per store (the plugin's ``shared``), none of them changes anything.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agora_tools.testing import BAD_PAGING, BAD_TOKENS, User, assert_problem, bearer
from notifications.application import CURSORS
from notifications.domain import Cursor

from .conftest import KEY, a_user, app_for, settings_for

MAILBOXES = ["/notifications", "/notifications/all"]


@pytest.mark.parametrize("path", MAILBOXES)
def test_without_a_token_a_mailbox_is_a_401(shared: TestClient, path: str) -> None:
    answer = shared.get(path)

    assert_problem(answer, 401)
    assert answer.headers["www-authenticate"].startswith("Bearer")


def test_a_customer_may_not_read_every_mailbox(shared: TestClient) -> None:
    answer = shared.get("/notifications/all", headers=a_user().headers)

    assert_problem(answer, 403)


@pytest.mark.parametrize("flaw", BAD_TOKENS)
def test_a_bad_token_is_a_401(shared: TestClient, flaw: str) -> None:
    answer = shared.get("/notifications", headers=bearer(KEY.spoilt(flaw, ["customer"])))

    assert_problem(answer, 401)


@pytest.mark.parametrize("path", MAILBOXES)
@pytest.mark.parametrize("params", BAD_PAGING, ids=repr)
def test_bad_paging_is_a_422(
    shared: TestClient, admin: User, path: str, params: dict[str, Any]
) -> None:
    answer = shared.get(path, params=params, headers=admin.headers)

    assert_problem(answer, 422)


@pytest.mark.parametrize("user_id", ["u" * 101, "\x00", "ada\nbob"], ids=repr)
def test_a_user_id_filter_no_user_has_is_a_422(
    shared: TestClient, admin: User, user_id: str
) -> None:
    answer = shared.get("/notifications/all", params={"user_id": user_id}, headers=admin.headers)

    assert_problem(answer, 422)


@pytest.mark.parametrize("path", MAILBOXES)
@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor!",
        "bm90IGpzb24",  # "not json"
        "WzEsMl0",  # [1,2]
        "WyIyMDI2LTAxLTAxVDAwOjAwOjAwIiwiaWQiXQ",  # a moment without a time zone
        "W10",  # []
        "\u00e9\u00e9",
        "WyIyMDI2LTAxLTAxVDAwOjAwOjAwWiIsIlx1MDAwMCJd",  # an id holding a NUL
        "WyIyMDI2LTAxLTAxVDAwOjAwOjAwWiIsInh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHgiXQ",
        # Moments no UTC moment can be: beyond the years a datetime holds, once in UTC.
        CURSORS.encode(Cursor(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))), "0")),
        CURSORS.encode(
            Cursor(datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))), "0")
        ),
    ],
)
def test_a_cursor_not_handed_out_is_a_400(
    shared: TestClient, admin: User, path: str, cursor: str
) -> None:
    answer = shared.get(path, params={"cursor": cursor}, headers=admin.headers)

    assert_problem(answer, 400)
    assert answer.json()["type"] == "/problems/invalid-cursor"


@pytest.mark.parametrize("year", [1, 2000])
def test_a_cursor_past_the_last_message_is_an_empty_page(
    shared: TestClient, admin: User, year: int
) -> None:
    cursor = CURSORS.encode(Cursor(datetime(year, 1, 1, tzinfo=UTC), "0"))

    answer = shared.get("/notifications/all", params={"cursor": cursor}, headers=admin.headers)

    assert answer.status_code == 200
    assert answer.json() == {"items": [], "next_cursor": None}


def test_an_empty_parameter_means_it_is_not_given(shared: TestClient, admin: User) -> None:
    answer = shared.get(
        "/notifications/all",
        params={"cursor": "", "limit": "", "user_id": ""},
        headers=admin.headers,
    )

    assert answer.status_code == 200


def test_the_app_documents_its_routes_and_problems(tmp_path: Path) -> None:
    app = app_for(settings_for(f"sqlite:///{tmp_path / 'n.db'}", tmp_path))

    document = app.openapi()

    assert set(document["paths"]) == {"/notifications", "/notifications/all"}
    assert "default" in document["paths"]["/notifications"]["get"]["responses"]
