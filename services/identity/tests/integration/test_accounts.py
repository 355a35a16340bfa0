"""Registering and logging in, through identity's HTTP API, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from agora_tools.testing import assert_problem

PASSWORD = "correct horse battery"
JSON_HEADERS = {"content-type": "application/json"}


# --- registering --------------------------------------------------------------------------------


def test_registering_answers_201_with_the_account_as_a_customer(api: Any) -> None:
    reply = api.client.post("/users", json={"email": "  Ada@Example.com ", "password": PASSWORD})

    assert reply.status_code == 201
    body = reply.json()
    assert set(body) == {"id", "email", "roles"}
    assert body["email"] == "ada@example.com"
    assert body["roles"] == ["customer"]


def test_a_second_registration_of_an_email_is_409_whatever_its_case(api: Any) -> None:
    api.register("ada@example.com")

    reply = api.client.post("/users", json={"email": "ADA@example.com", "password": PASSWORD})

    body = assert_problem(reply, 409)
    assert body["title"] == "Email already registered"


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short one", "at least 10 characters"),
        ("password123", "well-known"),
        ("i am ada.lovelace", "name part"),
        ("zzzzzzzzzzzz", "different characters"),
    ],
)
def test_a_weak_password_is_422_saying_why(api: Any, password: str, reason: str) -> None:
    reply = api.client.post(
        "/users", json={"email": "ada.lovelace@example.com", "password": password}
    )

    body = assert_problem(reply, 422)
    assert body["title"] == "Password too weak"
    assert reason in body["detail"]
    assert (
        api.client.post(
            "/token", json={"email": "ada.lovelace@example.com", "password": password}
        ).status_code
        == 401
    ), "a refused registration leaves no account behind"


def test_an_address_that_is_not_an_email_is_422(api: Any) -> None:
    reply = api.client.post("/users", json={"email": "ada at example", "password": PASSWORD})

    assert assert_problem(reply, 422)["title"] == "Invalid email address"


@pytest.mark.parametrize("path", ["/users", "/token"])
@pytest.mark.parametrize(
    "body",
    [
        {"email": "ada@example.com", "password": PASSWORD, "roles": ["admin"]},
        {"email": "ada@example.com", "password": 1234567890},
        {"email": ["ada@example.com"], "password": PASSWORD},
        {"email": "ada@example.com"},
        {"password": PASSWORD},
        ["ada@example.com", PASSWORD],
    ],
    ids=["unknown field", "number", "list", "no password", "no email", "not an object"],
)
def test_unknown_fields_wrong_types_and_missing_fields_are_422(
    api: Any, path: str, body: Any
) -> None:
    reply = api.client.post(path, json=body)

    assert assert_problem(reply, 422)["title"] == "Invalid request"


def test_nobody_can_register_as_an_admin(api: Any) -> None:
    reply = api.client.post(
        "/users", json={"email": "eve@example.com", "password": PASSWORD, "roles": ["admin"]}
    )

    assert reply.status_code == 422
    login = api.client.post("/token", json={"email": "eve@example.com", "password": PASSWORD})
    assert login.status_code == 401, "the refused registration made no account"


@pytest.mark.parametrize("path", ["/users", "/token"])
def test_malformed_json_is_400(api: Any, path: str) -> None:
    reply = api.client.post(
        path, content=b'{"email": "ada@example.com", "password": ', headers=JSON_HEADERS
    )

    assert assert_problem(reply, 400)["title"] == "Malformed JSON"


@pytest.mark.parametrize("path", ["/users", "/token"])
def test_an_oversize_body_is_413(api: Any, path: str) -> None:
    huge = {"email": "ada@example.com", "password": "x" * (1024 * 1024 + 1)}

    reply = api.client.post(path, json=huge)

    assert assert_problem(reply, 413)["title"] == "Request body too large"


# --- logging in ---------------------------------------------------------------------------------


def test_logging_in_gives_a_bearer_token_for_the_lifetime_that_no_cache_keeps(api: Any) -> None:
    api.register("ada@example.com")

    reply = api.client.post("/token", json={"email": "Ada@Example.com", "password": PASSWORD})

    assert reply.status_code == 200
    body = reply.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert reply.headers["cache-control"] == "no-store"


def test_a_wrong_password_and_an_unknown_email_get_the_same_401(api: Any) -> None:
    api.register("ada@example.com")

    wrong_password = api.client.post(
        "/token", json={"email": "ada@example.com", "password": "not my password"}
    )
    unknown_email = api.client.post(
        "/token", json={"email": "nobody@example.com", "password": "not my password"}
    )
    not_an_email = api.client.post("/token", json={"email": "nobody", "password": PASSWORD})

    refusals = (wrong_password, unknown_email, not_an_email)
    answers = [assert_problem(reply, 401) for reply in refusals]
    for answer in answers:
        del answer["request_id"]
    assert answers[0] == answers[1] == answers[2]
    assert answers[0]["title"] == "Invalid email or password"


def test_five_failed_logins_lock_the_email_with_429_and_retry_after(api: Any) -> None:
    api.register("ada@example.com")
    api.register("bob@example.com")
    wrong = {"email": "ada@example.com", "password": "guess guess guess"}

    statuses = [api.client.post("/token", json=wrong).status_code for _ in range(5)]
    locked = api.client.post("/token", json={"email": "ada@example.com", "password": PASSWORD})

    assert statuses == [401] * 5
    body = assert_problem(locked, 429)
    assert body["title"] == "Too many failed logins"
    assert 1 <= int(locked.headers["retry-after"]) <= 60
    assert api.log_in("bob@example.com"), "another email is not locked"


def test_unknown_emails_are_locked_like_known_ones(api: Any) -> None:
    wrong = {"email": "nobody@example.com", "password": "guess guess guess"}

    statuses = [api.client.post("/token", json=wrong).status_code for _ in range(6)]

    assert statuses == [401] * 5 + [429]


def test_the_lock_lifts_after_retry_after_and_grows_when_failures_go_on(api: Any) -> None:
    api.register("ada@example.com")
    wrong = {"email": "ada@example.com", "password": "guess guess guess"}
    for _ in range(5):
        api.client.post("/token", json=wrong)
    first_lock = int(api.client.post("/token", json=wrong).headers["retry-after"])

    api.clock.advance(seconds=first_lock)
    for _ in range(5):
        assert api.client.post("/token", json=wrong).status_code == 401
    second_lock = int(api.client.post("/token", json=wrong).headers["retry-after"])

    assert second_lock > first_lock
    api.clock.advance(seconds=second_lock)
    assert api.log_in("ada@example.com")


def test_a_successful_login_clears_the_failures(api: Any) -> None:
    api.register("ada@example.com")
    wrong = {"email": "ada@example.com", "password": "guess guess guess"}
    for _ in range(4):
        assert api.client.post("/token", json=wrong).status_code == 401

    api.log_in("ada@example.com")

    statuses = [api.client.post("/token", json=wrong).status_code for _ in range(4)]
    assert statuses == [401] * 4
    assert api.log_in("ada@example.com")


def test_failures_counted_by_one_replica_lock_the_email_on_another(api: Any, start: Any) -> None:
    api.register("ada@example.com")
    wrong = {"email": "ada@example.com", "password": "guess guess guess"}
    with start() as replica:
        for _ in range(3):
            assert api.client.post("/token", json=wrong).status_code == 401
        for _ in range(2):
            assert replica.client.post("/token", json=wrong).status_code == 401

        assert replica.client.post("/token", json=wrong).status_code == 429
        assert api.client.post("/token", json=wrong).status_code == 429
