"""The checkout's commands, through the in-memory bus, with the worker and the simulated
processor: what payments answers, the state the payment is left in, and what the ledger books."""

from __future__ import annotations

import pytest

from agora_tools.testing import an_order
from contracts.payments import CapturePayment, RefundPayment, VoidPayment
from payments.application import (
    Authorization,
    CardProcessor,
    ProcessorError,
    record_outcome,
)
from payments.domain import Card, CardNumber, OperationInProgress, Status

from .conftest import (
    APPROVED,
    DECLINED,
    INSUFFICIENT_FUNDS,
    PROCESSOR_ERROR,
    PROCESSOR_TIMEOUT,
    Bench,
    assert_balanced,
    held,
)


async def paid_with(bench: Bench, card: str = APPROVED, *, amount: int = 4990) -> str:
    """A new order whose payment was asked for with ``card`` and answered (the worker has run
    once): the order's id."""
    order_id = an_order()
    await bench.authorize(order_id, card, amount=amount)
    await bench.work()
    return order_id


async def captured(bench: Bench, *, amount: int = 4990) -> str:
    """A new order whose payment is authorized and captured: the order's id."""
    order_id = await paid_with(bench, amount=amount)
    await bench.send(CapturePayment(order_id=order_id))
    await bench.work()
    return order_id


async def test_an_approved_card_is_authorized_and_the_amount_held(bench: Bench) -> None:
    order_id = an_order()

    await bench.authorize(order_id, APPROVED, amount=4990, user_id="ada")
    assert await bench.answers(order_id) == []  # nothing is answered before the processor is
    await bench.work()

    (event,) = await bench.events(order_id)
    assert event.type == "payments.PaymentAuthorized.v1"
    payment = await bench.payment(order_id)
    assert event.data == {
        "order_id": order_id,
        "payment_id": payment.id,
        "amount": 4990,
        "currency": "EUR",
        "card_brand": "visa",
        "card_last4": "4242",
    }
    assert payment.status is Status.AUTHORIZED
    assert payment.user_id == "ada"
    ledger = await bench.ledger()
    assert held(ledger) == 4990
    assert ledger.movements == 1
    assert_balanced(ledger)


@pytest.mark.parametrize(
    ("card", "reason"),
    [(DECLINED, "declined"), (INSUFFICIENT_FUNDS, "insufficient_funds")],
    ids=["declined", "insufficient-funds"],
)
async def test_a_refused_card_is_declined_with_its_reason_and_nothing_held(
    bench: Bench, card: str, reason: str
) -> None:
    order_id = await paid_with(bench, card)

    (event,) = await bench.events(order_id)
    assert event.type == "payments.PaymentDeclined.v1"
    assert event.data["reason"] == reason
    assert (await bench.payment(order_id)).status is Status.DECLINED
    assert (await bench.ledger()).movements == 0


@pytest.mark.parametrize(
    ("card", "reason"),
    [(PROCESSOR_ERROR, "processor_error"), (PROCESSOR_TIMEOUT, "processor_timeout")],
    ids=["error", "timeout"],
)
async def test_a_processor_without_an_answer_fails_the_payment_and_may_be_asked_again(
    bench: Bench, card: str, reason: str
) -> None:
    order_id = await paid_with(bench, card)
    await bench.authorize(order_id, card)  # the checkout tries again
    await bench.work()

    assert await bench.answers(order_id) == ["PaymentFailed", "PaymentFailed"]
    assert [e.data["reason"] for e in await bench.events(order_id)] == [reason, reason]
    payment = await bench.payment(order_id)
    assert payment.status is Status.FAILED
    assert payment.attempts == 2
    assert await bench.operations() == []  # an attempt without an answer is not a done one
    assert (await bench.ledger()).movements == 0


async def test_asking_again_for_an_answered_authorization_answers_the_same(
    bench: Bench,
) -> None:
    approved, declined = an_order(), an_order()
    await bench.authorize(approved, APPROVED)
    await bench.authorize(declined, DECLINED)
    await bench.work()

    await bench.authorize(approved, APPROVED)
    await bench.authorize(declined, DECLINED)
    await bench.work()

    assert await bench.answers(approved) == ["PaymentAuthorized", "PaymentAuthorized"]
    assert await bench.answers(declined) == ["PaymentDeclined", "PaymentDeclined"]
    assert len(await bench.operations("authorize")) == 2  # one each
    assert (await bench.ledger()).movements == 1


async def test_capture_charges_once_however_often_it_is_asked(bench: Bench) -> None:
    order_id = await paid_with(bench, amount=1500)

    await bench.send(CapturePayment(order_id=order_id))
    await bench.send(CapturePayment(order_id=order_id))
    await bench.work()
    await bench.send(CapturePayment(order_id=order_id))
    await bench.settle()

    assert await bench.answers(order_id) == [
        "PaymentAuthorized",
        "PaymentCaptured",
        "PaymentCaptured",
    ]
    assert all(e.data["amount"] == 1500 for e in (await bench.events(order_id))[1:])
    payment = await bench.payment(order_id)
    assert payment.status is Status.CAPTURED
    assert payment.captured_amount == 1500
    assert len(await bench.operations("capture")) == 1
    ledger = await bench.ledger()
    assert ledger.balance("sales") == -1500
    assert ledger.balance("processor_receivable") == 1500
    assert held(ledger) == 0
    assert_balanced(ledger)


async def test_a_void_releases_the_hold(bench: Bench) -> None:
    order_id = await paid_with(bench)

    await bench.send(VoidPayment(order_id=order_id))
    await bench.work()
    await bench.send(VoidPayment(order_id=order_id))

    assert await bench.answers(order_id) == [
        "PaymentAuthorized",
        "PaymentVoided",
        "PaymentVoided",
    ]
    assert (await bench.payment(order_id)).status is Status.VOIDED
    assert len(await bench.operations("void")) == 1
    ledger = await bench.ledger()
    assert held(ledger) == 0
    assert ledger.movements == 2
    assert_balanced(ledger)


async def test_a_void_before_the_authorization_declines_it_without_asking_the_processor(
    bench: Bench,
) -> None:
    order_id = an_order()

    await bench.send(VoidPayment(order_id=order_id))
    await bench.authorize(order_id, APPROVED)
    await bench.settle()

    events = await bench.events(order_id)
    assert [e.type for e in events] == ["payments.PaymentVoided.v1", "payments.PaymentDeclined.v1"]
    assert events[0].data["payment_id"] is None  # the order never had a payment
    assert events[1].data["reason"] == "voided"
    assert (await bench.payment(order_id)).status is Status.VOIDED
    assert await bench.operations() == []
    assert (await bench.ledger()).movements == 0


async def test_a_void_of_a_failed_or_declined_payment_moves_no_money(bench: Bench) -> None:
    failed, declined = an_order(), an_order()
    await bench.authorize(failed, PROCESSOR_ERROR)
    await bench.authorize(declined, DECLINED)
    await bench.work()

    await bench.send(VoidPayment(order_id=failed))
    await bench.send(VoidPayment(order_id=declined))
    await bench.settle()

    assert (await bench.answers(failed))[-1] == "PaymentVoided"
    assert (await bench.answers(declined))[-1] == "PaymentVoided"
    assert (await bench.payment(failed)).status is Status.VOIDED
    assert await bench.operations("void") == []
    assert (await bench.ledger()).movements == 0


async def test_a_void_while_the_authorization_is_under_way_releases_what_it_held(
    bench: Bench,
) -> None:
    order_id = an_order()
    await bench.authorize(order_id, APPROVED)
    (claim,) = await bench.claim()

    await bench.send(VoidPayment(order_id=order_id))  # the processor has not answered yet
    outcome = await bench.worker.steps.call(claim)
    await bench.uow.run(record_outcome, bench.worker.steps.payments, claim, outcome, bench.clock())
    await bench.settle()

    # Voided at once; the late approval is released without telling the checkout otherwise.
    assert await bench.answers(order_id) == ["PaymentVoided", "PaymentVoided"]
    assert (await bench.payment(order_id)).status is Status.VOIDED
    assert len(await bench.operations("void")) == 1
    ledger = await bench.ledger()
    assert held(ledger) == 0
    assert_balanced(ledger)


async def test_a_captured_payment_is_not_voided(bench: Bench) -> None:
    order_id = await captured(bench)

    await bench.send(VoidPayment(order_id=order_id))
    await bench.settle()

    assert await bench.answers(order_id) == ["PaymentAuthorized", "PaymentCaptured"]
    assert (await bench.payment(order_id)).status is Status.CAPTURED


async def test_a_refund_gives_back_what_was_captured_once(bench: Bench) -> None:
    order_id = await captured(bench, amount=2500)

    await bench.send(RefundPayment(order_id=order_id))
    await bench.work()
    await bench.send(RefundPayment(order_id=order_id))
    await bench.settle()

    refunds = [e for e in await bench.events(order_id) if e.type.endswith("PaymentRefunded.v1")]
    assert [e.data["amount"] for e in refunds] == [2500, 2500]
    payment = await bench.payment(order_id)
    assert payment.status is Status.REFUNDED
    assert payment.refunded_amount == 2500
    assert len(await bench.operations("refund")) == 1
    ledger = await bench.ledger()
    assert ledger.balance("sales") == 0
    assert ledger.balance("processor_receivable") == 0
    assert held(ledger) == 0
    assert_balanced(ledger)


async def test_a_refund_of_nothing_captured_gives_back_nothing(bench: Bench) -> None:
    authorized, unknown = an_order(), an_order()
    await bench.authorize(authorized, APPROVED)
    await bench.work()

    await bench.send(RefundPayment(order_id=authorized))
    await bench.send(RefundPayment(order_id=unknown))

    (refund,) = [e for e in await bench.events(authorized) if "Refunded" in e.type]
    assert refund.data["amount"] == 0
    assert refund.data["currency"] == "EUR"
    (nothing,) = await bench.events(unknown)
    assert nothing.data == {
        "order_id": unknown,
        "payment_id": None,
        "amount": 0,
        "currency": "XXX",
    }
    assert (await bench.payment(authorized)).status is Status.AUTHORIZED
    assert await bench.operations("refund") == []


async def test_a_capture_before_the_authorization_is_answered_is_refused_for_now(
    bench: Bench,
) -> None:
    order_id = an_order()
    await bench.authorize(order_id, APPROVED)

    with pytest.raises(OperationInProgress):
        await bench.send(CapturePayment(order_id=order_id))

    await bench.work()
    await bench.send(CapturePayment(order_id=order_id))  # the redelivery, once it is answered
    await bench.work()
    assert (await bench.payment(order_id)).status is Status.CAPTURED


async def test_a_worker_that_dies_after_the_processor_answered_charges_nobody_twice(
    bench: Bench,
) -> None:
    order_id = an_order()
    await bench.authorize(order_id, APPROVED, amount=990)

    # A worker takes the authorization, the processor approves it, and the worker dies.
    (claim,) = await bench.claim()
    await bench.worker.steps.call(claim)
    assert await bench.work() == 0  # its lease still holds the operation
    bench.clock.advance(bench.worker.lease.total_seconds() + 1)
    await bench.work()

    await bench.send(CapturePayment(order_id=order_id))
    (claim,) = await bench.claim()
    await bench.worker.steps.call(claim)
    bench.clock.advance(bench.worker.lease.total_seconds() + 1)
    await bench.settle()

    assert await bench.answers(order_id) == ["PaymentAuthorized", "PaymentCaptured"]
    assert len(await bench.operations("authorize")) == 1
    assert len(await bench.operations("capture")) == 1
    ledger = await bench.ledger()
    assert ledger.balance("sales") == -990
    assert ledger.movements == 3  # hold, release, capture
    assert_balanced(ledger)


async def test_two_workers_never_take_the_same_operation(bench: Bench) -> None:
    order_id = an_order()
    await bench.authorize(order_id, APPROVED)

    first = await bench.claim()
    second = await bench.claim()

    assert [claim.order_id for claim in first] == [order_id]
    assert second == []


async def test_a_command_that_leaves_work_wakes_the_worker_once_committed(bench: Bench) -> None:
    order_id = an_order()

    await bench.authorize(order_id, APPROVED)
    assert bench.wakes == ["wake"]
    await bench.work()
    await bench.send(VoidPayment(order_id=order_id))

    assert bench.wakes == ["wake", "wake"]


class Flaky:
    """The simulated processor, but the first ``failures`` calls of each kind named fail."""

    def __init__(self, processor: CardProcessor, failures: int, *kinds: str) -> None:
        self.processor = processor
        self.left = dict.fromkeys(kinds, failures)

    def _fail(self, kind: str) -> None:
        if self.left.get(kind, 0) > 0:
            self.left[kind] -= 1
            raise ProcessorError(f"{kind} failed")

    async def tokenize(self, number: CardNumber) -> Card:
        return await self.processor.tokenize(number)

    async def authorize(
        self, token: str, amount: int, currency: str, reference: str
    ) -> Authorization:
        self._fail("authorize")
        return await self.processor.authorize(token, amount, currency, reference)

    async def capture(self, authorization: str, amount: int, reference: str) -> None:
        self._fail("capture")
        await self.processor.capture(authorization, amount, reference)

    async def void(self, authorization: str, reference: str) -> None:
        self._fail("void")
        await self.processor.void(authorization, reference)

    async def refund(self, authorization: str, amount: int, reference: str) -> None:
        self._fail("refund")
        await self.processor.refund(authorization, amount, reference)


async def test_a_failed_authorization_asked_for_again_can_succeed(bench: Bench) -> None:
    bench.worker.steps.processor = Flaky(bench.processor, 1, "authorize")
    order_id = await paid_with(bench)
    await bench.authorize(order_id, APPROVED)
    await bench.work()

    assert await bench.answers(order_id) == ["PaymentFailed", "PaymentAuthorized"]
    assert await bench.operations() == [(f"{order_id}:auth:2", "authorize", "approved")]
    assert (await bench.payment(order_id)).status is Status.AUTHORIZED


@pytest.mark.parametrize("step", ["capture", "void", "refund"])
async def test_a_step_after_the_decision_is_retried_until_the_processor_does_it(
    bench: Bench, step: str
) -> None:
    order_id = await (captured(bench) if step == "refund" else paid_with(bench))
    bench.worker.steps.processor = Flaky(bench.processor, 3, step)
    command = {"capture": CapturePayment, "void": VoidPayment, "refund": RefundPayment}[step]

    await bench.send(command(order_id=order_id))
    for _ in range(3):
        assert await bench.work() == 1  # taken, failed, put back for later
        assert await bench.work() == 0  # not before its pause is over
        bench.clock.advance(60)
    await bench.work()

    answers = await bench.answers(order_id)
    assert answers[-1] == {"capture": "PaymentCaptured", "void": "PaymentVoided"}.get(
        step, "PaymentRefunded"
    )
    assert answers.count(answers[-1]) == 1
    assert len(await bench.operations(step)) == 1
    assert (await bench.payment(order_id)).pending is None
    assert_balanced(await bench.ledger())
