"""The checkout saga's rules, without a database: each answer (or deadline) moves a checkout on
and says what to send next."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from orders.domain import (
    Checkout,
    Command,
    OrderCharged,
    Reason,
    Rules,
    Status,
    Step,
)

RULES = Rules(
    step_timeout=timedelta(seconds=5),
    reserve_attempts=3,
    authorize_attempts=3,
    retry_backoff=timedelta(seconds=0.5),
    backoff_max=timedelta(seconds=30),
)
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

Reserve = Command.RESERVE_STOCK
Release = Command.RELEASE_STOCK
Commit = Command.COMMIT_STOCK
Authorize = Command.AUTHORIZE_PAYMENT
Capture = Command.CAPTURE_PAYMENT
Void = Command.VOID_PAYMENT
Refund = Command.REFUND_PAYMENT


def later(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def placed() -> Checkout:
    checkout, sent = Checkout.begin(RULES, NOW)
    assert sent == (Reserve,)
    return checkout


def reserved() -> Checkout:
    checkout, sent = placed().stock_reserved(RULES, NOW)
    assert sent == (Authorize,)
    return checkout


def authorized() -> Checkout:
    checkout, sent = reserved().payment_authorized(RULES, NOW)
    assert sent == (Capture, Commit)
    return checkout


def expire(checkout: Checkout) -> tuple[Checkout, tuple[Command, ...]]:
    """The timer firing at the checkout's deadline."""
    assert checkout.deadline_at is not None
    return checkout.deadline(RULES, checkout.deadline_at)


def acknowledged(checkout: Checkout, *commands: Command) -> Checkout:
    """The checkout once the service each of ``commands`` went to has acknowledged it, in that
    order (an acknowledgement that would send anything more fails the test)."""
    answers = {
        Release: Checkout.stock_released,
        Commit: Checkout.stock_committed,
        Capture: Checkout.payment_captured,
        Void: Checkout.payment_voided,
        Refund: Checkout.payment_refunded,
    }
    for command in commands:
        checkout, sent = answers[command](checkout, RULES, NOW)
        assert sent == (), f"acknowledging {command} sent {sent}"
    return checkout


def test_placing_reserves_the_stock_and_waits_one_step_timeout() -> None:
    checkout = placed()

    assert checkout.step is Step.RESERVING
    assert checkout.attempt == 1
    assert checkout.deadline_at == later(5)
    assert checkout.status is Status.PENDING


def test_the_happy_path_confirms_only_once_capture_and_commit_are_both_acknowledged() -> None:
    checkout = authorized()
    assert checkout.step is Step.COMPLETING

    checkout, sent = checkout.payment_captured(RULES, NOW)
    assert sent == ()
    assert checkout.status is Status.PENDING

    checkout, sent = checkout.stock_committed(RULES, NOW)
    assert sent == ()
    assert checkout.status is Status.CONFIRMED
    assert checkout.step is Step.DONE
    assert checkout.deadline_at is None
    assert checkout.reason is None


def test_commit_before_capture_confirms_as_well() -> None:
    checkout, _ = authorized().stock_committed(RULES, NOW)
    assert checkout.status is Status.PENDING

    checkout, _ = checkout.payment_captured(RULES, NOW)
    assert checkout.status is Status.CONFIRMED


def test_out_of_stock_cancels_at_once_with_nothing_to_give_back() -> None:
    checkout, sent = placed().stock_rejected("out_of_stock", RULES, NOW)

    assert sent == ()
    assert checkout.status is Status.CANCELLED
    assert checkout.reason is Reason.OUT_OF_STOCK
    assert checkout.deadline_at is None


@pytest.mark.parametrize(
    ("turn", "compensation", "reason", "by_customer"),
    [
        pytest.param(
            lambda: reserved().payment_declined("insufficient_funds", RULES, NOW),
            Release,
            Reason.PAYMENT_DECLINED,
            False,
            id="a-declined-payment-releases-the-stock",
        ),
        pytest.param(
            lambda: placed().cancel(RULES, NOW),
            Release,
            Reason.CUSTOMER_CANCELLED,
            True,
            id="a-customer-cancelling-while-reserving-releases-the-stock",
        ),
        pytest.param(
            lambda: acknowledged(authorized(), Capture).stock_rejected(
                "reservation_expired", RULES, NOW
            ),
            Refund,
            Reason.RESERVATION_EXPIRED,
            False,
            id="a-reservation-expiring-after-the-capture-refunds-the-payment",
        ),
    ],
)
def test_a_turn_for_the_worse_is_compensated_and_cancels_once_acknowledged(
    turn: Callable[[], tuple[Checkout, tuple[Command, ...]]],
    compensation: Command,
    reason: Reason,
    by_customer: bool,
) -> None:
    checkout, sent = turn()

    assert sent == (compensation,)
    assert checkout.step is Step.COMPENSATING
    assert checkout.status is Status.PENDING
    assert checkout.cancel_requested is by_customer

    checkout = acknowledged(checkout, compensation)
    assert checkout.status is Status.CANCELLED
    assert checkout.reason is reason


def test_a_failed_payment_is_tried_again_after_the_backoff_and_may_then_succeed() -> None:
    checkout, sent = reserved().payment_failed(RULES, later(1))

    assert sent == ()
    assert checkout.deadline_at == later(1.5)
    assert checkout.deadline(RULES, later(1.4)) == (checkout, ())

    checkout, sent = checkout.deadline(RULES, later(1.5))
    assert sent == (Authorize,)
    assert checkout.attempt == 2
    assert checkout.deadline_at == later(6.5)

    checkout, sent = checkout.payment_authorized(RULES, later(2))
    assert sent == (Capture, Commit)
    assert checkout.step is Step.COMPLETING


def test_a_second_failure_while_a_retry_waits_changes_nothing() -> None:
    checkout, _ = reserved().payment_failed(RULES, NOW)

    assert checkout.payment_failed(RULES, later(0.1)) == (checkout, ())


def test_three_failures_void_and_release_and_cancel_only_after_both_acknowledged() -> None:
    checkout = reserved()
    for attempt in (1, 2):
        checkout, sent = checkout.payment_failed(RULES, NOW)
        assert sent == ()
        checkout, sent = expire(checkout)
        assert sent == (Authorize,)
        assert checkout.attempt == attempt + 1

    checkout, sent = checkout.payment_failed(RULES, NOW)
    assert sorted(sent) == sorted((Void, Release))
    assert checkout.step is Step.COMPENSATING

    checkout, _ = checkout.payment_voided(RULES, NOW)
    assert checkout.status is Status.PENDING
    checkout, _ = checkout.stock_released(RULES, NOW)
    assert checkout.status is Status.CANCELLED
    assert checkout.reason is Reason.PAYMENT_FAILED


def test_a_failure_counts_as_a_failure_also_after_a_resend_for_want_of_an_answer() -> None:
    # A slow answer: the deadline resends before payments' failure arrives.
    checkout = reserved()
    for _ in range(2):
        checkout, _ = checkout.payment_failed(RULES, NOW)
        checkout, sent = expire(checkout)
        assert sent == (Authorize,)
    checkout, sent = expire(checkout)
    assert sent == (Authorize,)

    checkout, sent = checkout.payment_failed(RULES, NOW)

    assert sorted(sent) == sorted((Void, Release))
    assert checkout.reason is Reason.PAYMENT_FAILED
    assert checkout.attempt == 4


def test_silence_after_a_failure_ends_as_a_timeout_once_its_resends_run_out() -> None:
    checkout, _ = reserved().payment_failed(RULES, NOW)
    checkout, _ = expire(checkout)  # the retry: the first send since payments answered
    for _ in range(RULES.authorize_attempts - 1):
        checkout, sent = expire(checkout)
        assert sent == (Authorize,)

    checkout, sent = expire(checkout)

    assert sorted(sent) == sorted((Void, Release))
    assert checkout.reason is Reason.PAYMENT_TIMEOUT


@pytest.mark.parametrize(
    ("start", "request_sent", "step", "compensations", "reason"),
    [
        pytest.param(
            placed, Reserve, Step.RESERVING, (Release,), Reason.STOCK_TIMEOUT, id="reservation"
        ),
        pytest.param(
            reserved,
            Authorize,
            Step.AUTHORIZING,
            (Release, Void),
            Reason.PAYMENT_TIMEOUT,
            id="authorization",
        ),
    ],
)
def test_an_unanswered_request_is_resent_then_compensated_and_cancelled_as_its_timeout(
    start: Callable[[], Checkout],
    request_sent: Command,
    step: Step,
    compensations: tuple[Command, ...],
    reason: Reason,
) -> None:
    checkout = start()
    for attempt in (2, 3):
        checkout, sent = expire(checkout)
        assert sent == (request_sent,)
        assert checkout.attempt == attempt
        assert checkout.step is step

    checkout, sent = expire(checkout)
    assert sorted(sent) == sorted(compensations)
    assert checkout.step is Step.COMPENSATING
    assert checkout.reason is reason

    checkout = acknowledged(checkout, *compensations)
    assert checkout.status is Status.CANCELLED
    assert checkout.reason is reason


def test_nothing_happens_before_the_deadline() -> None:
    checkout = placed()

    assert checkout.deadline(RULES, later(4.999)) == (checkout, ())


def completing_without_the_commit() -> Checkout:
    checkout, _ = authorized().payment_captured(RULES, NOW)
    return checkout


def compensating_the_reservation() -> Checkout:
    checkout, _ = reserved().payment_declined("declined", RULES, NOW)
    return checkout


@pytest.mark.parametrize(
    ("start", "resent", "step", "waits", "status"),
    [
        pytest.param(
            completing_without_the_commit,
            Commit,
            Step.COMPLETING,
            [10, 20, 30, 30, 30, 30, 30, 30],
            Status.CONFIRMED,
            id="completion-resends-only-the-missing-part",
        ),
        pytest.param(
            compensating_the_reservation,
            Release,
            Step.COMPENSATING,
            [10, 20, 30, 30, 30, 30],
            Status.CANCELLED,
            id="compensation",
        ),
    ],
)
def test_a_step_that_must_finish_is_resent_for_ever_with_a_growing_wait_until_acknowledged(
    start: Callable[[], Checkout], resent: Command, step: Step, waits: list[float], status: Status
) -> None:
    checkout = start()
    waited = []
    for _ in waits:
        assert checkout.deadline_at is not None
        fired_at = checkout.deadline_at
        checkout, sent = expire(checkout)
        assert sent == (resent,)
        assert checkout.step is step
        assert checkout.deadline_at is not None
        waited.append((checkout.deadline_at - fired_at).total_seconds())

    assert waited == waits
    checkout = acknowledged(checkout, resent)
    assert checkout.status is status


def test_completion_resends_both_when_neither_is_acknowledged() -> None:
    _, sent = expire(authorized())

    assert sent == (Capture, Commit)


def test_a_cancelled_checkout_still_shows_how_often_the_step_that_gave_up_was_tried() -> None:
    checkout = reserved()
    for _ in range(RULES.authorize_attempts):
        checkout, _ = expire(checkout)
    checkout = acknowledged(checkout, Void, Release)

    assert checkout.status is Status.CANCELLED
    assert checkout.attempt == RULES.authorize_attempts


def test_only_the_unacknowledged_compensation_is_resent() -> None:
    checkout = reserved()
    for _ in range(RULES.authorize_attempts):
        checkout, _ = expire(checkout)
    assert checkout.reason is Reason.PAYMENT_TIMEOUT
    checkout, _ = checkout.payment_voided(RULES, NOW)

    _, sent = expire(checkout)

    assert sent == (Release,)


def test_a_customer_cancels_while_authorizing_the_payment_is_voided_and_the_stock_released() -> (
    None
):
    checkout, sent = reserved().cancel(RULES, NOW)

    assert sorted(sent) == sorted((Void, Release))
    checkout = acknowledged(checkout, Void, Release)
    assert checkout.status is Status.CANCELLED
    assert checkout.reason is Reason.CUSTOMER_CANCELLED


def test_a_late_authorization_after_a_cancel_is_ignored_and_the_void_still_awaited() -> None:
    checkout, _ = reserved().cancel(RULES, NOW)

    after, sent = checkout.payment_authorized(RULES, NOW)
    assert sent == ()
    assert after.step is Step.COMPENSATING
    assert after.awaiting_void

    after, _ = after.payment_declined("voided", RULES, NOW)
    assert after.awaiting_void


@pytest.mark.parametrize(
    "charged",
    [authorized(), authorized().payment_captured(RULES, NOW)[0]],
    ids=["completing", "captured"],
)
def test_an_order_being_charged_cannot_be_cancelled(charged: Checkout) -> None:
    with pytest.raises(OrderCharged):
        charged.cancel(RULES, NOW)


def test_a_confirmed_order_cannot_be_cancelled() -> None:
    checkout, _ = authorized().payment_captured(RULES, NOW)
    checkout, _ = checkout.stock_committed(RULES, NOW)

    with pytest.raises(OrderCharged):
        checkout.cancel(RULES, NOW)


def test_cancelling_a_cancelled_or_compensating_order_changes_nothing() -> None:
    cancelled, _ = placed().stock_rejected("out_of_stock", RULES, NOW)
    compensating, _ = reserved().payment_declined("declined", RULES, NOW)

    assert cancelled.cancel(RULES, NOW) == (cancelled, ())
    assert compensating.cancel(RULES, NOW) == (compensating, ())


def test_late_and_duplicate_answers_are_ignored() -> None:
    completing = authorized()
    assert completing.stock_reserved(RULES, NOW) == (completing, ())
    assert completing.payment_authorized(RULES, NOW) == (completing, ())
    assert completing.payment_failed(RULES, NOW) == (completing, ())
    assert completing.payment_declined("declined", RULES, NOW) == (completing, ())
    assert completing.stock_released(RULES, NOW) == (completing, ())

    confirmed, _ = completing.payment_captured(RULES, NOW)
    confirmed, _ = confirmed.stock_committed(RULES, NOW)
    for late in (
        confirmed.payment_captured(RULES, NOW),
        confirmed.stock_committed(RULES, NOW),
        confirmed.stock_rejected("reservation_expired", RULES, NOW),
        confirmed.deadline(RULES, later(3600)),
    ):
        assert late == (confirmed, ())


def test_a_reservation_after_the_release_was_sent_does_not_lose_the_awaited_release() -> None:
    checkout, _ = placed().cancel(RULES, NOW)

    checkout, sent = checkout.stock_reserved(RULES, NOW)
    assert sent == ()
    assert checkout.awaiting_release
    checkout, _ = checkout.stock_rejected("released", RULES, NOW)
    assert checkout.awaiting_release

    checkout, _ = checkout.stock_released(RULES, NOW)
    assert checkout.status is Status.CANCELLED


def test_answers_for_a_compensation_not_awaited_are_ignored() -> None:
    checkout, _ = reserved().payment_declined("declined", RULES, NOW)

    assert checkout.payment_voided(RULES, NOW) == (checkout, ())
    assert checkout.payment_refunded(RULES, NOW) == (checkout, ())


def test_an_expired_reservation_before_the_capture_refunds_once_the_capture_is_acknowledged() -> (
    None
):
    checkout, sent = authorized().stock_rejected("reservation_expired", RULES, NOW)
    assert sent == (Capture,)

    # A refund acknowledgement cannot come before the refund was sent.
    assert checkout.payment_refunded(RULES, NOW) == (checkout, ())
    _, sent = expire(checkout)
    assert sent == (Capture,)

    checkout, sent = checkout.payment_captured(RULES, NOW)
    assert sent == (Refund,)
    checkout, _ = checkout.payment_refunded(RULES, NOW)
    assert checkout.status is Status.CANCELLED
    assert checkout.reason is Reason.RESERVATION_EXPIRED


def test_the_backoff_doubles_from_the_step_timeout_up_to_its_ceiling() -> None:
    assert [RULES.backoff(n).total_seconds() for n in range(1, 6)] == [5, 10, 20, 30, 30]
