"""Card numbers: exchanged for a token by a logged-in user, refused with a 422 that does not repeat
them, and never found afterwards: not in the database's bytes, not in the logs, not in an event."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agora.db import sqlite_path
from agora_tools.testing import User, an_order, assert_problem
from contracts.payments import AuthorizePayment, CapturePayment

from .conftest import APPROVED, a_user, app_for, bench_on, settings_for


def test_a_logged_in_user_gets_a_token_the_brand_and_the_last_four(
    client: TestClient, customer: User
) -> None:
    answer = client.post(
        "/payments/cards", json={"card_number": APPROVED}, headers=customer.headers
    )

    assert answer.status_code == 201
    card = answer.json()
    assert set(card) == {"token", "brand", "last4"}
    assert (card["brand"], card["last4"]) == ("visa", "4242")
    assert card["token"].startswith("tok_")
    again = client.post("/payments/cards", json={"card_number": APPROVED}, headers=customer.headers)
    assert again.json()["token"] != card["token"]  # a token per exchange, as processors do


@pytest.mark.parametrize(
    ("number", "brand"),
    [
        ("5555555555554444", "mastercard"),
        ("2223 0031 2200 3222", "mastercard"),
        ("3782 822463 10005", "amex"),
        ("6011111111111117", "card"),
    ],
)
def test_the_brand_comes_from_the_first_digits(
    shared: TestClient, customer: User, number: str, brand: str
) -> None:
    answer = shared.post("/payments/cards", json={"card_number": number}, headers=customer.headers)

    assert answer.status_code == 201
    assert answer.json()["brand"] == brand
    assert answer.json()["last4"] == number.replace(" ", "")[-4:]


# Long and nearly right: the kind of input a 422 would be most tempted to echo.
BAD_NUMBERS = [
    "4242 4242 4242 4241",  # check digit wrong
    "4242 4242 4242 4242 4242 4242",  # 24 digits
    "4242-4242-4242-4242",  # dashes
    "4242 4242 4242 424x",
    "4242 4242 4242 4242 4242 4242 4242 4242 4242",  # longer than any number written out
    "424242",  # too short
    "",
    "\uff14\uff12" * 8,  # full-width digits
]


@pytest.mark.parametrize("number", BAD_NUMBERS)
def test_a_bad_number_is_a_422_that_does_not_repeat_it(
    shared: TestClient, customer: User, number: str
) -> None:
    answer = shared.post("/payments/cards", json={"card_number": number}, headers=customer.headers)

    assert_problem(answer, 422)
    digits = number.replace(" ", "").replace("-", "")
    if len(digits) >= 6:
        assert digits not in answer.text
        assert number not in answer.text
        assert digits[:12] not in answer.text.replace(" ", "")


@pytest.mark.parametrize(
    "body",
    [
        {"card_number": 4242424242424242},
        {"card_number": None},
        {},
        {"card_number": APPROVED, "cvc": "123"},
        ["4242424242424242"],
    ],
    ids=["number", "null", "missing", "extra-field", "list"],
)
def test_a_body_of_the_wrong_shape_is_a_422_that_does_not_repeat_it(
    shared: TestClient, customer: User, body: Any
) -> None:
    answer = shared.post("/payments/cards", json=body, headers=customer.headers)

    assert answer.status_code == 422
    assert "4242424242424242" not in answer.text
    assert APPROVED not in answer.text


def test_malformed_json_is_a_400(shared: TestClient, customer: User) -> None:
    answer = shared.post(
        "/payments/cards",
        content=b'{"card_number": "4242 4242 4242 4242"',
        headers={**customer.headers, "content-type": "application/json"},
    )

    assert answer.status_code == 400
    assert "4242 4242 4242 4242" not in answer.text


def test_exchanging_a_card_needs_a_logged_in_user(shared: TestClient) -> None:
    answer = shared.post("/payments/cards", json={"card_number": APPROVED})

    assert_problem(answer, 401)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_card_number_is_nowhere_after_a_payment(
    database_url: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # Everything logged, requests and SQL included, to look for the number in.
    settings = settings_for(database_url, tmp_path, log_level="debug")
    ada = a_user()
    order_id = an_order()
    with TestClient(app_for(settings), raise_server_exceptions=False) as client:
        card = client.post("/payments/cards", json={"card_number": APPROVED}, headers=ada.headers)
        refused = client.post(
            "/payments/cards",
            json={"card_number": "4242 4242 4242 4242 4242"},
            headers=ada.headers,
        )
        authorize = AuthorizePayment(
            order_id=order_id,
            user_id=ada.id,
            amount=1200,
            currency="EUR",
            card_token=card.json()["token"],
        )
        # The commands come in as the broker would bring them; the app's own worker answers.
        asyncio.run(_send(database_url, authorize))
        _wait_for_status(client, ada, order_id, "authorized")
        asyncio.run(_send(database_url, CapturePayment(order_id=order_id)))
        payment = _wait_for_status(client, ada, order_id, "captured")
        stored = _database_bytes(database_url)

    assert card.status_code == 201
    assert refused.status_code == 422
    assert payment["captured_amount"] == 1200
    logs = capfd.readouterr()
    seen = stored + (logs.out + logs.err).encode() + refused.content
    assert b'"status":201' in (logs.out + logs.err).replace(" ", "").encode()  # logs were kept
    for written in ("4242424242424242", APPROVED, "4242 4242 4242 4242 4242", "424242424242"):
        assert written.encode() not in seen
    assert b"4242" in stored  # the last four are kept, as they should be


async def _send(url: str, command: Any) -> None:
    async with bench_on(url) as bench:
        await bench.send(command)


def _wait_for_status(client: TestClient, user: User, order_id: str, status: str) -> Any:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        answer = client.get("/payments", params={"order_id": order_id}, headers=user.headers)
        items = answer.json()["items"]
        if items and items[0]["status"] == status:
            return items[0]
        time.sleep(0.05)
    raise AssertionError(f"the payment of {order_id} never became {status}")


def _database_bytes(url: str) -> bytes:
    path = sqlite_path(url)
    assert path is not None
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    return b"".join(file.read_bytes() for file in files if file.exists())
