"""Payments' use cases: the checkout's commands, the worker's steps at the card processor, and the
read side.

Calls to the processor are slow and may fail, and must never run inside a database transaction. So
a command handler only writes down what is asked (the payment's ``pending`` operation), in the
transaction that also records the command in the inbox. The chassis's worker
(:class:`agora.tasks.Worker`) then runs :class:`Operations`: it claims pending operations (a
conditional update on a lease, so two replicas never take the same one), calls the processor
outside any transaction, and writes the outcome, its ledger movements and the answer event in one
transaction (which the outcomes ready at the same moment share, ADR 59). Should payments die
between the call and that write, the lease expires and the call is made again with the same
reference: the processor answers a repeated reference with its first answer, so a card is never
charged twice. While the worker loop runs, a command takes the lease on what it leaves itself, in
its own transaction, and hands the operation to the loop once committed
(:class:`agora.tasks.Wakeup`): no claim transaction on that path.

Transactions are plain functions ``handler(connection, payments, ...)`` that the unit of work runs:
``payments`` keeps the payments and the ledger within that transaction (the SQL one in production),
so this module names no table.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog
from sqlalchemy import Connection

from agora import tasks
from agora.cursor import CursorCodec, Page, paged
from agora.db import UnitOfWork, on_commit
from agora.messaging.outbox import record
from contracts.payments import AuthorizePayment, PaymentRefunded
from payments.application.events import event
from payments.application.processor import (
    Approved,
    Authorization,
    CardProcessor,
    Claim,
    Deadline,
    Declined,
    Outcome,
    ProcessorError,
    ProcessorTimeout,
    Refused,
    Unanswered,
    ask,
    tokenize,
)
from payments.domain import (
    NO_CURRENCY,
    BookedMovement,
    Ledger,
    Movement,
    MovementCursor,
    Operation,
    Payment,
    PaymentCursor,
)

__all__ = [
    "Approved",
    "Authorization",
    "CardProcessor",
    "Claim",
    "Deadline",
    "Declined",
    "Ledger",
    "Outcome",
    "ProcessorError",
    "ProcessorTimeout",
    "Refused",
    "Unanswered",
    "tokenize",
]

log = structlog.get_logger("payments")

# --- storage, and what bootstrap chooses -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaymentQuery:
    """A page of payments: ``user_id`` None for all users' (an admin)."""

    limit: int
    user_id: str | None = None
    order_id: str | None = None
    after: tuple[datetime, str] | None = None


class Payments(Protocol):
    """The payments and their ledger, within the transaction of ``connection``."""

    def get(
        self, connection: Connection, order_id: str, *, for_update: bool = False
    ) -> Payment | None: ...

    def add(self, connection: Connection, payment: Payment) -> None: ...

    def save(self, connection: Connection, payment: Payment) -> None: ...

    def book(
        self, connection: Connection, payment: Payment, movement: Movement, now: datetime
    ) -> None:
        """Write ``movement`` of ``payment`` to the ledger: the movement and its two entries."""

    def due(self, connection: Connection, now: datetime, limit: int) -> list[str]:
        """Orders whose payment has an operation no worker holds (or whose lease ran out)."""

    def claim(
        self, connection: Connection, order_id: str, token: str, until: datetime, now: datetime
    ) -> bool:
        """Take the order's pending operation until ``until`` unless another worker holds it."""

    def listing(self, connection: Connection, query: PaymentQuery, limit: int) -> list[Payment]:
        """Up to ``limit`` payments matching ``query``, oldest first, after its cursor."""

    def ledger(self, connection: Connection) -> Ledger: ...

    def movements(
        self, connection: Connection, order_id: str | None, after: int | None, limit: int
    ) -> list[BookedMovement]:
        """Up to ``limit`` movements by id, after ``after``, of one order or all."""


Wake = Callable[[], None]
PAYMENT_CURSORS = CursorCodec(PaymentCursor)
MOVEMENT_CURSORS = CursorCodec(MovementCursor)


def _nothing() -> None:
    """The wake of a unit of work with no worker to wake."""


@dataclass(frozen=True, slots=True)
class Parts:
    """What bootstrap chooses for the routes, the subscriptions and the worker: the storage, the
    processor (behind its :class:`Deadline`), and what a commit that leaves an operation wakes
    (the worker's :class:`Wakeup`, which also takes the operations commands lease themselves)."""

    payments: Payments
    processor: CardProcessor
    wakeup: Wake = _nothing


# --- the checkout's commands -------------------------------------------------------------------


def authorize_payment(
    connection: Connection, payments: Payments, command: AuthorizePayment, wake: Wake = _nothing
) -> None:
    now = _now()
    payment = payments.get(connection, command.order_id, for_update=True)
    if payment is None:
        payment = Payment.request(
            id=str(uuid.uuid4()),
            order_id=command.order_id,
            user_id=command.user_id,
            amount=command.amount,
            currency=command.currency,
            card_token=command.card_token,
            now=now,
        )
        _settle(connection, payments, payment, now, wake, new=True)
        return
    payment.authorize(now)
    _settle(connection, payments, payment, now, wake)


def capture_payment(
    connection: Connection, payments: Payments, order_id: str, wake: Wake = _nothing
) -> None:
    now = _now()
    payment = payments.get(connection, order_id, for_update=True)
    if payment is None or not payment.capture(now):
        status = payment and payment.status
        log.warning("capture refused: nothing authorized", order_id=order_id, status=status)
        return
    _settle(connection, payments, payment, now, wake)


def void_payment(
    connection: Connection, payments: Payments, order_id: str, wake: Wake = _nothing
) -> None:
    now = _now()
    payment = payments.get(connection, order_id, for_update=True)
    if payment is None:
        payment = Payment.tombstone(id=str(uuid.uuid4()), order_id=order_id, now=now)
        _settle(connection, payments, payment, now, wake, new=True)
    elif payment.void(now):
        _settle(connection, payments, payment, now, wake)
    else:
        # Voiding is for money held, not charged: a charge is given back by a refund.
        log.warning("void refused: the payment is captured", order_id=order_id)


def refund_payment(
    connection: Connection, payments: Payments, order_id: str, wake: Wake = _nothing
) -> None:
    now = _now()
    payment = payments.get(connection, order_id, for_update=True)
    if payment is None:
        nothing = PaymentRefunded(order_id=order_id, amount=0, currency=NO_CURRENCY)
        record(connection, nothing, aggregate=order_id)
        return
    payment.refund(now)
    _settle(connection, payments, payment, now, wake)


# --- the worker's steps ------------------------------------------------------------------------


Wakeup = tasks.Wakeup[Claim]


def claim_operations(
    connection: Connection, payments: Payments, now: datetime, lease: timedelta, limit: int
) -> list[Claim]:
    """Take up to ``limit`` due operations for ``lease``; those another worker took meanwhile
    are left to it."""
    claims: list[Claim] = []
    for order_id, token in tasks.leased(connection, payments, now, now + lease, limit):
        payment = payments.get(connection, order_id)
        assert payment is not None
        claims.append(Claim.of(payment, token, now + lease))
    return claims


def record_outcome(
    connection: Connection,
    payments: Payments,
    claim: Claim,
    outcome: Outcome,
    now: datetime,
    wake: Wake = _nothing,
) -> bool:
    """Write what the processor answered; False when the claim was lost to another worker (its
    lease ran out), whose call with the same reference gets the same answer and records it."""
    payment = payments.get(connection, claim.order_id, for_update=True)
    if payment is None or payment.lease_token != claim.token:
        log.info("outcome left to the worker that holds the operation", order_id=claim.order_id)
        return False
    log.info(
        "processor answered",
        order_id=claim.order_id,
        operation=claim.operation.value,
        reference=claim.reference,
        outcome=type(outcome).__name__.lower(),
        reason=None if isinstance(outcome, Approved) else outcome.reason,
    )
    if isinstance(outcome, Approved):
        done = outcome.authorization
        if done is None:
            payment.approved(now)
        else:
            payment.approved(
                now, authorization_id=done.id, card_brand=done.brand, card_last4=done.last4
            )
    elif isinstance(outcome, Refused) and claim.operation is Operation.AUTHORIZE:
        payment.refused(outcome.reason, now)
    else:
        reason = outcome.reason
        if claim.operation is not Operation.AUTHORIZE:
            log.warning(
                "processor operation failed, will try again",
                order_id=claim.order_id,
                operation=claim.operation.value,
                reason=reason,
                failures=payment.failures + 1,
            )
        payment.unanswered(reason, now)
    _settle(connection, payments, payment, now, wake)
    return True


class Operations:
    """The worker's three steps (:class:`agora.tasks.Steps`): claim pending operations, ask the
    processor (behind a :class:`Deadline`, so no call keeps the worker long), record what it
    answered; ``wake`` is what a recorded outcome that leaves another operation wakes."""

    def __init__(self, uow: UnitOfWork, parts: Parts) -> None:
        self.uow = uow
        self.payments = parts.payments
        self.processor = parts.processor
        self.wake = parts.wakeup

    async def claim(self, now: datetime, lease: timedelta, limit: int) -> list[Claim]:
        return await self.uow.run(claim_operations, self.payments, now, lease, limit)

    async def call(self, claim: Claim) -> Outcome:
        return await ask(self.processor, claim)

    def record(self, connection: Connection, claim: Claim, outcome: Outcome, now: datetime) -> None:
        record_outcome(connection, self.payments, claim, outcome, now, self.wake)

    def describe(self, claim: Claim) -> dict[str, object]:
        return {"order_id": claim.order_id, "operation": claim.operation.value}


class Worker(tasks.Worker[Claim, Outcome]):
    """The chassis's worker over :class:`Operations`, woken (and handed operations) by a
    :class:`Wakeup`; :func:`worker` makes one."""

    steps: Operations
    wakeup: Wakeup


def worker(
    uow: UnitOfWork,
    parts: Parts,
    *,
    lease: timedelta,
    poll: float = 0.2,
    batch: int = 20,
    clock: Callable[[], datetime] | None = None,
) -> Worker:
    """The worker that carries out the pending operations, woken by ``parts.wakeup`` (a fresh
    :class:`Wakeup` when that is no worker's)."""
    wakeup = parts.wakeup if isinstance(parts.wakeup, tasks.Wakeup) else Wakeup()
    steps = Operations(uow, parts)
    return Worker(steps, lease=lease, poll=poll, batch=batch, wakeup=wakeup, clock=clock)


# --- the read side -----------------------------------------------------------------------------


def list_payments(connection: Connection, payments: Payments, query: PaymentQuery) -> Page[Payment]:
    # One row more than the page shows whether another page follows.
    rows = payments.listing(connection, query, query.limit + 1)
    return paged(
        PAYMENT_CURSORS, rows, query.limit, lambda last: PaymentCursor(last.created_at, last.id)
    )


def payment_cursor(token: str) -> tuple[datetime, str]:
    after = PAYMENT_CURSORS.decode(token)
    return after.created_at, after.id


def ledger(connection: Connection, payments: Payments) -> Ledger:
    return payments.ledger(connection)


def list_movements(
    connection: Connection, payments: Payments, order_id: str | None, limit: int, cursor: str | None
) -> Page[BookedMovement]:
    after = MOVEMENT_CURSORS.decode(cursor).id if cursor else None
    rows = payments.movements(connection, order_id, after, limit + 1)
    return paged(MOVEMENT_CURSORS, rows, limit, lambda last: MovementCursor(last.id))


# --- shared ------------------------------------------------------------------------------------


def _settle(
    connection: Connection,
    payments: Payments,
    payment: Payment,
    now: datetime,
    wake: Wake,
    *,
    new: bool = False,
) -> None:
    """Write the payment (``new``: insert it), book its movements and record its answers. If an
    operation now waits for the processor and a worker loop runs here (``wake`` is its
    :class:`Wakeup`, with a lease), take the operation in this transaction and hand it to the loop
    once committed; otherwise wake the loop to poll for it."""
    handoff: Claim | None = None
    loop = wake if isinstance(wake, tasks.Wakeup) else None
    waiting = payment.pending is not None and payment.lease_until is None
    if waiting and loop is not None and loop.lease is not None:
        # The same lease a claim takes: another replica leaves the operation alone until it runs
        # out, and takes it then (should this process die before it is done).
        payment.lease_token = uuid.uuid4().hex
        payment.lease_until = now + loop.lease
        handoff = Claim.of(payment, payment.lease_token, payment.lease_until)
    if new:
        payments.add(connection, payment)
    else:
        payments.save(connection, payment)
    for movement in payment.movements:
        payments.book(connection, payment, movement, now)
    for answer in payment.answers:
        record(connection, event(payment, answer), aggregate=payment.order_id)
    payment.movements.clear()
    payment.answers.clear()
    if handoff is not None:
        assert loop is not None
        hand, claim = loop.hand, handoff
        on_commit(connection, lambda: hand(claim))
    elif payment.pending is not None and payment.lease_until is None:
        on_commit(connection, wake)


def _now() -> datetime:
    return datetime.now(UTC)
