"""The card number is used once, to get a token from payments, and kept nowhere: not in the
database (its file and its write-ahead log), not in the outbox, not in any log line."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from agora.db import sqlite_path
from agora_tools.testing import Headers

from .conftest import Fakes, an_order, app_for, keyed, settings_for

NUMBER = "5555 5555 5555 4444"


def stored_bytes(database: Path) -> bytes:
    files = [database, database.with_name(database.name + "-wal")]
    return b"".join(path.read_bytes() for path in files if path.exists())


def test_the_card_number_is_in_no_row_and_no_log_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], alice: Headers
) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'orders.db'}"
    settings = settings_for(url, tmp_path, log_level="debug")
    with TestClient(app_for(settings, Fakes()), raise_server_exceptions=False) as client:
        placed = client.post("/orders", json=an_order(card_number=NUMBER), headers=keyed(alice))
        assert placed.status_code == 202
        # A replay and a refused body read and hash the number again.
        headers = keyed(alice, "again")
        for status in (202, 200):
            reply = client.post("/orders", json=an_order(card_number=NUMBER), headers=headers)
            assert reply.status_code == status
        refused = client.post(
            "/orders", json=an_order(card_number=NUMBER, lines=[]), headers=keyed(alice)
        )
        assert refused.status_code == 422
        order = client.get(f"/orders/{placed.json()['id']}", headers=alice).json()
        assert order["card_last4"] == "4444"

    database = sqlite_path(url)
    assert database is not None
    stored = stored_bytes(database)
    logs = capfd.readouterr()
    assert b"orders" in stored  # the file holds the tables: the search below means something
    assert "order placed" in logs.out
    for form in (NUMBER, NUMBER.replace(" ", "")):
        assert form.encode() not in stored
        assert form not in logs.out
        assert form not in logs.err
