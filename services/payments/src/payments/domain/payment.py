"""A payment: one per order, its states, and the operation it waits for at the processor."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from payments.domain.ledger import Movement, MovementKind

PAGE_DEFAULT = 100
PAGE_MAX = 500
# Capture, void and refund come after the checkout's decision and must eventually succeed: a
# processor error puts the operation back, tried again after a pause that doubles up to this.
RETRY_FIRST = timedelta(seconds=0.5)
RETRY_LONGEST = timedelta(seconds=30)
# The currency a refund of an order payments never heard of is reported in (ISO 4217 "no
# currency"): the contract asks for one, and there is none to give.
NO_CURRENCY = "XXX"


class OperationInProgress(Exception):
    """The payment's previous operation is still in progress."""


class Status(StrEnum):
    """A payment's state. ``pending``: its first authorization has not been answered yet."""

    PENDING = "pending"
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    VOIDED = "voided"
    REFUNDED = "refunded"
    DECLINED = "declined"
    FAILED = "failed"


class Operation(StrEnum):
    """What a payment waits for the processor to do."""

    AUTHORIZE = "authorize"
    CAPTURE = "capture"
    VOID = "void"
    REFUND = "refund"


class Reply(StrEnum):
    """What a payment tells the checkout; the application turns each into the contract's event."""

    AUTHORIZED = "authorized"
    DECLINED = "declined"
    FAILED = "failed"
    CAPTURED = "captured"
    VOIDED = "voided"
    REFUNDED = "refunded"


@dataclass(frozen=True, slots=True)
class Answer:
    reply: Reply
    reason: str | None = None


@dataclass
class Payment:
    """The one payment of an order, and the operation it waits for, if any.

    ``pending`` is the operation the worker is to carry out at the processor; ``lease_until`` and
    ``lease_token`` say which worker has taken it and until when (``lease_until`` is also when a
    failed capture, void or refund is tried again). A payment without ``amount`` is a tombstone:
    a void came before any authorization, and later authorizations are declined.
    """

    id: str
    order_id: str
    user_id: str | None
    amount: int | None
    currency: str | None
    card_token: str | None
    status: Status
    created_at: datetime
    updated_at: datetime
    card_brand: str | None = None
    card_last4: str | None = None
    reason: str | None = None
    captured_amount: int = 0
    refunded_amount: int = 0
    attempts: int = 0
    authorization_id: str | None = None
    pending: Operation | None = None
    lease_until: datetime | None = None
    lease_token: str | None = None
    failures: int = 0
    answers: list[Answer] = field(default_factory=list, compare=False, repr=False)
    movements: list[Movement] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def request(
        cls,
        *,
        id: str,
        order_id: str,
        user_id: str,
        amount: int,
        currency: str,
        card_token: str,
        now: datetime,
    ) -> Payment:
        """A new payment whose first authorization is to be asked of the processor."""
        return cls(
            id=id,
            order_id=order_id,
            user_id=user_id,
            amount=amount,
            currency=currency,
            card_token=card_token,
            status=Status.PENDING,
            attempts=1,
            pending=Operation.AUTHORIZE,
            created_at=now,
            updated_at=now,
        )

    @classmethod
    def tombstone(cls, *, id: str, order_id: str, now: datetime) -> Payment:
        """The mark a void leaves for an order payments never saw: its authorization, should it
        come late, is declined."""
        payment = cls(
            id=id,
            order_id=order_id,
            user_id=None,
            amount=None,
            currency=None,
            card_token=None,
            status=Status.VOIDED,
            created_at=now,
            updated_at=now,
        )
        payment.answers.append(Answer(Reply.VOIDED))
        return payment

    # -- the commands -----------------------------------------------------------------------

    def authorize(self, now: datetime) -> None:
        """AuthorizePayment for an order that has a payment already."""
        if self.status is Status.FAILED:
            # The processor gave no answer last time: a new attempt, with a new reference.
            self.attempts += 1
            self.status = Status.PENDING
            self.reason = None
            self._wait_for(Operation.AUTHORIZE, now)
        elif self.status is Status.VOIDED or self.pending is Operation.VOID:
            self.answers.append(Answer(Reply.DECLINED, "voided"))
        elif self.status is Status.DECLINED:
            self.answers.append(Answer(Reply.DECLINED, self.reason or "declined"))
        elif self.status in (Status.AUTHORIZED, Status.CAPTURED, Status.REFUNDED):
            self.answers.append(Answer(Reply.AUTHORIZED))
        # pending: the answer comes when the processor's does.

    def capture(self, now: datetime) -> bool:
        """CapturePayment. False when it cannot apply (nothing authorized, or a void first)."""
        if self.status is Status.PENDING:
            raise OperationInProgress("the payment's authorization has not been answered yet")
        if self.status in (Status.CAPTURED, Status.REFUNDED):
            self.answers.append(Answer(Reply.CAPTURED))
            return True
        if self.status is not Status.AUTHORIZED or self.pending is Operation.VOID:
            return False
        if self.pending is None:
            self._wait_for(Operation.CAPTURE, now)
        return True

    def void(self, now: datetime) -> bool:
        """VoidPayment. False when the money is charged already: a charge is refunded, never
        voided."""
        if self.status in (Status.CAPTURED, Status.REFUNDED) or self.pending is Operation.CAPTURE:
            return False
        if self.status is Status.AUTHORIZED:
            if self.pending is None:
                self._wait_for(Operation.VOID, now)
            return True
        if self.status is Status.VOIDED:
            # Told again, unless the release at the processor is under way: that tells it.
            if self.pending is not Operation.VOID:
                self.answers.append(Answer(Reply.VOIDED))
            return True
        if self.status is Status.PENDING and self.lease_until is not None:
            # The authorization may have reached the processor: let it finish (the worker asks
            # again with the same reference), then release whatever it holds.
            self.status = Status.VOIDED
            self.updated_at = now
            self.answers.append(Answer(Reply.VOIDED))
            return True
        # declined, failed, or an authorization no worker has sent yet: nothing is held.
        self.status = Status.VOIDED
        self.pending = None
        self.lease_until = None
        self.lease_token = None
        self.updated_at = now
        self.answers.append(Answer(Reply.VOIDED))
        return True

    def refund(self, now: datetime) -> None:
        """RefundPayment: what was captured goes back; with nothing captured, nothing moves."""
        if self.pending is Operation.CAPTURE:
            raise OperationInProgress("the payment's capture has not been answered yet")
        if self.status is Status.CAPTURED:
            if self.pending is None:
                self._wait_for(Operation.REFUND, now)
        elif self.status is Status.REFUNDED or self.captured_amount == 0:
            self.answers.append(Answer(Reply.REFUNDED))

    # -- the processor's answers ------------------------------------------------------------

    def approved(
        self,
        now: datetime,
        *,
        authorization_id: str | None = None,
        card_brand: str | None = None,
        card_last4: str | None = None,
    ) -> None:
        """The processor did the pending operation."""
        operation = self._done(now)
        if operation is Operation.AUTHORIZE:
            assert self.amount is not None
            assert self.currency is not None
            self.authorization_id = authorization_id
            self.card_brand = card_brand
            self.card_last4 = card_last4
            self.movements.append(Movement(MovementKind.HOLD, self.amount, self.currency))
            if self.status is Status.VOIDED:
                # Voided while the authorization was on its way: release the hold at once.
                self._wait_for(Operation.VOID, now)
            else:
                self.status = Status.AUTHORIZED
                self.answers.append(Answer(Reply.AUTHORIZED))
        elif operation is Operation.CAPTURE:
            assert self.amount is not None
            assert self.currency is not None
            self.movements.append(Movement(MovementKind.RELEASE, self.amount, self.currency))
            self.movements.append(Movement(MovementKind.CAPTURE, self.amount, self.currency))
            self.captured_amount = self.amount
            self.status = Status.CAPTURED
            self.answers.append(Answer(Reply.CAPTURED))
        elif operation is Operation.VOID:
            if self.authorization_id is not None:
                assert self.amount is not None
                assert self.currency is not None
                self.movements.append(Movement(MovementKind.RELEASE, self.amount, self.currency))
            self.status = Status.VOIDED
            self.answers.append(Answer(Reply.VOIDED))
        else:
            assert self.currency is not None
            if self.captured_amount > 0:
                self.movements.append(
                    Movement(MovementKind.REFUND, self.captured_amount, self.currency)
                )
            self.refunded_amount = self.captured_amount
            self.status = Status.REFUNDED
            self.answers.append(Answer(Reply.REFUNDED))

    def refused(self, reason: str, now: datetime) -> None:
        """The processor declined the authorization (a business answer: final)."""
        self._expect(Operation.AUTHORIZE)
        self._done(now)
        if self.status is not Status.VOIDED:
            self.status = Status.DECLINED
            self.reason = reason
            self.answers.append(Answer(Reply.DECLINED, reason))

    def unanswered(self, reason: str, now: datetime) -> None:
        """The processor erred or did not answer in time.

        An authorization fails (the checkout may ask again); a capture, void or refund is tried
        again after a pause, for as long as it takes.
        """
        if self.pending is not Operation.AUTHORIZE:
            self.failures += 1
            pause = min(RETRY_FIRST * 2 ** (self.failures - 1), RETRY_LONGEST)
            self.lease_token = None
            self.lease_until = now + pause
            self.updated_at = now
            return
        self._done(now)
        if self.status is not Status.VOIDED:
            self.status = Status.FAILED
            self.reason = reason
            self.answers.append(Answer(Reply.FAILED, reason))

    def reference(self) -> str:
        """The processor's idempotency key for the pending operation: asking again with it
        returns the first answer, so an operation repeated after a crash is done once."""
        if self.pending is Operation.AUTHORIZE:
            return f"{self.order_id}:auth:{self.attempts}"
        if self.pending is None:
            raise ValueError("there is no pending operation")
        return f"{self.order_id}:{self.pending.value}"

    def _expect(self, operation: Operation) -> None:
        if self.pending is not operation:
            raise ValueError(f"the payment waits for {self.pending}, not {operation}")

    def _wait_for(self, operation: Operation, now: datetime) -> None:
        self.pending = operation
        self.lease_until = None
        self.lease_token = None
        self.failures = 0
        self.updated_at = now

    def _done(self, now: datetime) -> Operation:
        if self.pending is None:
            raise ValueError("there is no pending operation")
        operation = self.pending
        self.pending = None
        self.lease_until = None
        self.lease_token = None
        self.failures = 0
        self.updated_at = now
        return operation


# Keyset paging: a page starts after the last row of the one before, so pages neither repeat nor
# skip rows while others are added. The application hands these out as opaque tokens
# (agora.cursor).


@dataclass(frozen=True, slots=True)
class PaymentCursor:
    """Where the next page of payments starts: after this one (oldest first; ties by id)."""

    created_at: datetime
    id: str
