"""The rules: card numbers, a payment's states and answers, and the ledger's movements."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agora.cursor import InvalidCursor
from payments.application import MOVEMENT_CURSORS, PAYMENT_CURSORS
from payments.domain import (
    RETRY_LONGEST,
    Account,
    Answer,
    CardNumber,
    InvalidCard,
    Movement,
    MovementCursor,
    MovementKind,
    Operation,
    OperationInProgress,
    Payment,
    PaymentCursor,
    Reply,
    Status,
    card_brand,
    luhn_valid,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


# --- cards -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "digits",
    ["4242424242424242", "4000000000000002", "5555555555554444", "378282246310005", "79927398713"],
)
def test_luhn_accepts_numbers_whose_check_digit_fits(digits: str) -> None:
    assert luhn_valid(digits)


@pytest.mark.parametrize("digits", ["4242424242424241", "4000000000000003", "79927398710"])
def test_luhn_refuses_a_wrong_check_digit(digits: str) -> None:
    assert not luhn_valid(digits)


@pytest.mark.parametrize(
    ("digits", "brand"),
    [
        ("4242424242424242", "visa"),
        ("5105105105105100", "mastercard"),
        ("5555555555554444", "mastercard"),
        ("2221000000000009", "mastercard"),
        ("2720990000000007", "mastercard"),
        ("2220990000000008", "card"),
        ("2721000000000003", "card"),
        ("5600000000000003", "card"),
        ("378282246310005", "amex"),
        ("341111111111111", "amex"),
        ("6011111111111117", "card"),
    ],
)
def test_the_brand_follows_the_first_digits(digits: str, brand: str) -> None:
    assert card_brand(digits) == brand


def test_a_card_number_may_be_written_in_groups_and_keeps_its_last_four() -> None:
    number = CardNumber.parse("4242 4242 4242 4242")

    assert number.digits == "4242424242424242"
    assert number.brand == "visa"
    assert number.last4 == "4242"


def test_a_card_number_never_shows_its_digits() -> None:
    number = CardNumber.parse("4000 0000 0000 0002")

    for shown in (repr(number), str(number), f"{number}", f"{[number]}"):
        assert "4000000000000002" not in shown
        assert "0002" in shown


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("4242 4242 4242 4241", "check digit"),
        ("42424242424", "12 to 19 digits"),
        ("42424242424242424242", "12 to 19 digits"),
        ("4242-4242-4242-4242", "digits only"),
        ("", "digits only"),
        ("٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢", "digits only"),  # Arabic-Indic digits are digits, not card digits
    ],
)
def test_a_bad_number_says_why_without_repeating_it(text: str, why: str) -> None:
    with pytest.raises(InvalidCard) as refused:
        CardNumber.parse(text)

    assert why in str(refused.value)
    if text:
        assert text.replace(" ", "") not in str(refused.value)


# --- the ledger --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(MovementKind))
def test_every_movement_is_one_debit_and_one_credit_of_its_amount(kind: MovementKind) -> None:
    debit, credit = Movement(kind, 1234, "EUR").entries

    assert (debit.debit, debit.credit) == (1234, 0)
    assert (credit.debit, credit.credit) == (0, 1234)
    assert debit.account != credit.account


def test_a_movement_moves_a_positive_amount() -> None:
    with pytest.raises(ValueError, match="positive"):
        Movement(MovementKind.HOLD, 0, "EUR")


def balances(movements: list[Movement]) -> dict[Account, int]:
    found: dict[Account, int] = {}
    for movement in movements:
        for entry in movement.entries:
            found[entry.account] = found.get(entry.account, 0) + entry.debit - entry.credit
    return found


def test_once_settled_nothing_stays_held_and_sales_are_what_was_kept() -> None:
    captured = [Movement(k, 100, "EUR") for k in (MovementKind.HOLD, MovementKind.RELEASE)]
    captured.append(Movement(MovementKind.CAPTURE, 100, "EUR"))
    voided = [Movement(k, 40, "EUR") for k in (MovementKind.HOLD, MovementKind.RELEASE)]
    refunded = [
        Movement(k, 7, "EUR")
        for k in (
            MovementKind.HOLD,
            MovementKind.RELEASE,
            MovementKind.CAPTURE,
            MovementKind.REFUND,
        )
    ]

    found = balances(captured + voided + refunded)

    assert found[Account.CARD_AUTHORIZATIONS] == found[Account.CUSTOMER_CARDS] == 0
    assert found[Account.SALES] == -100
    assert found[Account.PROCESSOR_RECEIVABLE] == 100
    assert sum(found.values()) == 0


# --- payments ----------------------------------------------------------------------------------


def a_payment(amount: int = 5000) -> Payment:
    return Payment.request(
        id="p-1",
        order_id="o-1",
        user_id="u-1",
        amount=amount,
        currency="EUR",
        card_token="tok_1",
        now=NOW,
    )


def state(payment: Payment) -> tuple[Status, Operation | None]:
    return payment.status, payment.pending


def answered(payment: Payment) -> list[Answer]:
    found = list(payment.answers)
    payment.answers.clear()
    return found


def kinds(payment: Payment) -> list[MovementKind]:
    found = [movement.kind for movement in payment.movements]
    payment.movements.clear()
    return found


def authorized(amount: int = 5000) -> Payment:
    payment = a_payment(amount)
    payment.approved(NOW, authorization_id="auth_1", card_brand="visa", card_last4="4242")
    answered(payment)
    kinds(payment)
    return payment


def captured() -> Payment:
    payment = authorized()
    payment.capture(NOW)
    payment.approved(NOW)
    answered(payment)
    kinds(payment)
    return payment


def test_a_new_payment_waits_for_its_first_authorization() -> None:
    payment = a_payment()

    assert payment.status is Status.PENDING
    assert payment.pending is Operation.AUTHORIZE
    assert payment.reference() == "o-1:auth:1"
    assert answered(payment) == []


def test_an_approved_authorization_holds_the_amount_and_says_so() -> None:
    payment = a_payment(5000)

    payment.approved(NOW, authorization_id="auth_1", card_brand="visa", card_last4="4242")

    assert payment.status is Status.AUTHORIZED
    assert payment.pending is None
    assert (payment.card_brand, payment.card_last4) == ("visa", "4242")
    assert answered(payment) == [Answer(Reply.AUTHORIZED)]
    assert payment.movements == [Movement(MovementKind.HOLD, 5000, "EUR")]


def test_a_refusal_declines_the_payment_for_good() -> None:
    payment = a_payment()
    payment.refused("insufficient_funds", NOW)

    payment.authorize(NOW)

    assert payment.status is Status.DECLINED
    assert payment.pending is None
    assert answered(payment) == [
        Answer(Reply.DECLINED, "insufficient_funds"),
        Answer(Reply.DECLINED, "insufficient_funds"),
    ]
    assert payment.movements == []


def test_a_failed_authorization_is_tried_again_under_a_new_reference() -> None:
    payment = a_payment()
    payment.unanswered("processor_timeout", NOW)
    assert state(payment) == (Status.FAILED, None)
    assert answered(payment) == [Answer(Reply.FAILED, "processor_timeout")]

    payment.authorize(NOW)

    assert state(payment) == (Status.PENDING, Operation.AUTHORIZE)
    assert payment.reference() == "o-1:auth:2"
    assert answered(payment) == []


def test_asking_again_while_the_authorization_is_under_way_changes_nothing() -> None:
    payment = a_payment()

    payment.authorize(NOW)

    assert payment.attempts == 1
    assert answered(payment) == []


def test_an_authorized_payment_asked_again_answers_authorized_again() -> None:
    payment = authorized()

    payment.authorize(NOW)

    assert answered(payment) == [Answer(Reply.AUTHORIZED)]
    assert payment.pending is None


def test_a_capture_releases_the_hold_and_books_the_sale() -> None:
    payment = authorized(5000)

    assert payment.capture(NOW)
    assert payment.pending is Operation.CAPTURE
    assert payment.reference() == "o-1:capture"
    payment.approved(NOW)

    assert payment.status is Status.CAPTURED
    assert payment.captured_amount == 5000
    assert answered(payment) == [Answer(Reply.CAPTURED)]
    assert kinds(payment) == [MovementKind.RELEASE, MovementKind.CAPTURE]


def test_a_second_capture_answers_again_and_moves_nothing() -> None:
    payment = captured()

    assert payment.capture(NOW)

    assert payment.pending is None
    assert answered(payment) == [Answer(Reply.CAPTURED)]
    assert kinds(payment) == []


def test_a_capture_already_asked_for_is_not_asked_for_twice() -> None:
    payment = authorized()
    payment.capture(NOW)
    payment.lease_until = NOW  # a worker has it

    assert payment.capture(NOW)

    assert payment.lease_until == NOW
    assert answered(payment) == []


def test_a_capture_that_fails_is_tried_again_later_and_later_never_given_up() -> None:
    payment = authorized()
    payment.capture(NOW)
    pauses = []
    for _ in range(12):
        payment.unanswered("processor_error", NOW)
        assert payment.lease_until is not None
        pauses.append(payment.lease_until - NOW)

    assert payment.status is Status.AUTHORIZED
    assert payment.pending is Operation.CAPTURE
    assert answered(payment) == []
    assert pauses[0] < pauses[1] < pauses[2]
    assert pauses[-1] == RETRY_LONGEST


def test_a_capture_before_the_authorization_is_answered_must_wait() -> None:
    with pytest.raises(OperationInProgress):
        a_payment().capture(NOW)


@pytest.mark.parametrize("refusal", ["declined", "voided", "failed"])
def test_nothing_is_captured_without_an_authorization(refusal: str) -> None:
    payment = a_payment()
    if refusal == "declined":
        payment.refused("declined", NOW)
    elif refusal == "failed":
        payment.unanswered("processor_error", NOW)
    else:
        payment.void(NOW)
    answered(payment)

    assert not payment.capture(NOW)
    assert payment.pending is None
    assert answered(payment) == []


def test_a_void_of_an_authorization_releases_its_hold() -> None:
    payment = authorized(300)

    assert payment.void(NOW)
    assert payment.reference() == "o-1:void"
    payment.approved(NOW)

    assert payment.status is Status.VOIDED
    assert answered(payment) == [Answer(Reply.VOIDED)]
    assert payment.movements == [Movement(MovementKind.RELEASE, 300, "EUR")]


def test_a_void_first_leaves_a_tombstone_that_declines_the_late_authorization() -> None:
    tombstone = Payment.tombstone(id="p-1", order_id="o-1", now=NOW)
    assert answered(tombstone) == [Answer(Reply.VOIDED)]

    tombstone.authorize(NOW)

    assert tombstone.pending is None
    assert answered(tombstone) == [Answer(Reply.DECLINED, "voided")]


def test_a_void_before_any_worker_took_the_authorization_asks_the_processor_nothing() -> None:
    payment = a_payment()

    assert payment.void(NOW)

    assert payment.status is Status.VOIDED
    assert payment.pending is None
    assert answered(payment) == [Answer(Reply.VOIDED)]


def test_a_void_while_the_authorization_is_at_the_processor_releases_it_when_it_comes() -> None:
    payment = a_payment(800)
    payment.lease_until = NOW + timedelta(seconds=5)  # a worker has sent it

    payment.void(NOW)
    assert answered(payment) == [Answer(Reply.VOIDED)]
    assert state(payment) == (Status.VOIDED, Operation.AUTHORIZE)
    payment.approved(NOW, authorization_id="auth_1", card_brand="visa", card_last4="4242")

    assert state(payment) == (Status.VOIDED, Operation.VOID)
    assert answered(payment) == []  # the checkout was told it is voided; it stays so
    assert kinds(payment) == [MovementKind.HOLD]
    payment.approved(NOW)
    assert kinds(payment) == [MovementKind.RELEASE]


def test_a_void_while_the_authorization_is_at_the_processor_that_declines_it_ends_there() -> None:
    payment = a_payment()
    payment.lease_until = NOW + timedelta(seconds=5)
    payment.void(NOW)
    answered(payment)

    payment.refused("declined", NOW)

    assert payment.status is Status.VOIDED
    assert payment.pending is None
    assert answered(payment) == []


def test_a_captured_payment_is_not_voided() -> None:
    payment = captured()

    assert not payment.void(NOW)

    assert payment.status is Status.CAPTURED
    assert answered(payment) == []


def test_a_refund_gives_back_the_captured_amount_once() -> None:
    payment = captured()

    payment.refund(NOW)
    assert payment.reference() == "o-1:refund"
    payment.approved(NOW)
    payment.refund(NOW)

    assert payment.status is Status.REFUNDED
    assert payment.refunded_amount == 5000
    assert answered(payment) == [Answer(Reply.REFUNDED), Answer(Reply.REFUNDED)]
    assert kinds(payment) == [MovementKind.REFUND]


def test_a_refund_of_a_payment_never_captured_gives_back_nothing() -> None:
    payment = authorized()

    payment.refund(NOW)

    assert payment.pending is None
    assert payment.refunded_amount == 0
    assert answered(payment) == [Answer(Reply.REFUNDED)]


def test_a_refund_while_the_capture_is_under_way_must_wait() -> None:
    payment = authorized()
    payment.capture(NOW)

    with pytest.raises(OperationInProgress):
        payment.refund(NOW)


# --- paging ------------------------------------------------------------------------------------


def test_a_cursor_gives_back_its_key() -> None:
    payment = PaymentCursor(datetime(2026, 1, 1, tzinfo=UTC), "p-1")
    movement = MovementCursor(42)

    assert PAYMENT_CURSORS.decode(PAYMENT_CURSORS.encode(payment)) == payment
    assert MOVEMENT_CURSORS.decode(MOVEMENT_CURSORS.encode(movement)) == movement


@pytest.mark.parametrize(
    "token",
    [
        "",
        "!!!",
        "WyJ4Il0",  # ["x"]
        "W3RydWVd",  # [true]
        # [9223372036854775808]: a movement id beyond a 64-bit column
        "WzkyMjMzNzIwMzY4NTQ3NzU4MDhd",
    ],
)
def test_a_cursor_not_handed_out_is_refused(token: str) -> None:
    with pytest.raises(InvalidCursor):
        MOVEMENT_CURSORS.decode(token)
