"""Bad input and missing rights: each is a 4xx problem, never a 500."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from agora_tools.testing import STORES, database
from notifications.application import CURSORS
from notifications.domain import Cursor

from .conftest import PROBLEM, User, a_user, app_for, bearer, settings_for, sign

MAILBOXES = ["/notifications", "/notifications/all"]


@pytest.fixture(scope="module", params=STORES)
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """An app shared by the tests of this module, none of which changes anything."""
    data_dir = tmp_path_factory.mktemp("notifications")
    with (
        database(request.param, "notifications", data_dir) as url,
        TestClient(app_for(settings_for(url, data_dir)), raise_server_exceptions=False) as client,
    ):
        yield client


@pytest.mark.parametrize("path", MAILBOXES)
def test_without_a_token_a_mailbox_is_a_401(shared: TestClient, path: str) -> None:
    answer = shared.get(path)

    assert answer.status_code == 401
    assert answer.headers["content-type"] == PROBLEM
    assert answer.headers["www-authenticate"].startswith("Bearer")


def test_a_customer_may_not_read_every_mailbox(shared: TestClient) -> None:
    answer = shared.get("/notifications/all", headers=a_user().headers)

    assert answer.status_code == 403
    assert answer.headers["content-type"] == PROBLEM


@pytest.mark.parametrize(
    "token",
    [
        lambda: sign(["customer"], exp=1),
        lambda: sign(["customer"], key=Ed25519PrivateKey.generate()),
        lambda: sign(["customer"], aud="another-audience"),
        lambda: "not.a.jwt",
    ],
    ids=["expired", "wrong-signature", "wrong-audience", "garbage"],
)
def test_a_bad_token_is_a_401(shared: TestClient, token: Callable[[], str]) -> None:
    answer = shared.get("/notifications", headers=bearer(token()))

    assert answer.status_code == 401
    assert answer.headers["content-type"] == PROBLEM


@pytest.mark.parametrize("path", MAILBOXES)
@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": -1},
        {"limit": "ten"},
        {"limit": 2.5},
        {"cursor": "x" * 513},
    ],
    ids=repr,
)
def test_bad_paging_is_a_422(
    shared: TestClient, admin: User, path: str, params: dict[str, Any]
) -> None:
    answer = shared.get(path, params=params, headers=admin.headers)

    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == PROBLEM


@pytest.mark.parametrize("user_id", ["u" * 101, "\x00", "ada\nbob"], ids=repr)
def test_a_user_id_filter_no_user_has_is_a_422(
    shared: TestClient, admin: User, user_id: str
) -> None:
    answer = shared.get("/notifications/all", params={"user_id": user_id}, headers=admin.headers)

    assert answer.status_code == 422
    assert answer.headers["content-type"] == PROBLEM


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

    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == PROBLEM
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
