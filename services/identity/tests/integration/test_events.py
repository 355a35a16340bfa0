"""What identity tells other services: UserRegistered, written to its outbox in the transaction
that creates the account, once per account."""

from __future__ import annotations

from typing import Any

from agora_tools.testing import outbox_events

PASSWORD = "correct horse battery"


def registered(database_url: str) -> list[dict[str, Any]]:
    return [e.data for e in outbox_events(database_url) if e.type == "identity.UserRegistered.v1"]


def test_registering_records_user_registered(api: Any, database_url: str) -> None:
    reply = api.client.post("/users", json={"email": "Ada@Example.com", "password": PASSWORD})
    assert reply.status_code == 201

    (event,) = [e for e in registered(database_url) if e["email"] == "ada@example.com"]
    assert event["user_id"] == reply.json()["id"]


def test_a_refused_registration_records_nothing(api: Any, database_url: str) -> None:
    api.client.post("/users", json={"email": "ada@example.com", "password": PASSWORD})
    before = len(registered(database_url))

    assert (
        api.client.post(
            "/users", json={"email": "ada@example.com", "password": PASSWORD}
        ).status_code
        == 409
    )
    assert (
        api.client.post(
            "/users", json={"email": "bob@example.com", "password": "short"}
        ).status_code
        == 422
    )

    assert len(registered(database_url)) == before


def test_the_admin_account_is_announced_once(api: Any, database_url: str) -> None:
    admins = [e for e in registered(database_url) if e["email"] == api.settings.admin_email]

    assert len(admins) == 1
