"""Payments' use cases: the checkout's commands, the worker that talks to the card processor, and
the read side.

Calls to the processor are slow and may fail, and must never run inside a database transaction.
So a command handler only writes down what is asked (the payment's ``pending`` operation), in the
transaction that also records the command in the inbox. The :class:`Worker` then takes pending
operations (a conditional update on a lease, so two replicas never take the same one), calls the
processor outside any transaction, and writes the outcome, its ledger movements and the answer
event in one transaction. Should payments die between the call and that write, the lease expires
and the call is made again with the same reference: the processor answers a repeated reference
with its first answer, so a card is never charged twice. While the worker loop runs, a command
takes the lease on what it leaves itself, in its own transaction, and hands the operation to the
loop once committed (see :class:`Wakeup`): no claim transaction on that path.

Handlers are plain functions ``handler(session, store, ...)``: ``store`` turns the unit of work's
session into the :class:`Payments` port, so this module names no table.
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

import structlog
from sqlalchemy.orm import Session

from agora.cursor import CursorCodec
from agora.db import UnitOfWork, on_commit
from agora.messaging.outbox import record
from agora.tasks import cancel_and_wait
from contracts.base import IntegrationEvent
from contracts.payments import (
    AuthorizePayment,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentDeclined,
    PaymentFailed,
    PaymentRefunded,
    PaymentVoided,
)
from payments.domain import (
    NO_CURRENCY,
    Answer,
    Card,
    CardNumber,
    Movement,
    MovementCursor,
    MovementKind,
    Operation,
    Payment,
    PaymentCursor,
    Reply,
)

log = structlog.get_logger("payments")
T = TypeVar("T")

# --- the card processor ------------------------------------------------------------------------


class Declined(Exception):
    """The processor refused: ``reason`` is ``declined`` or ``insufficient_funds``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProcessorError(Exception):
    """The card processor failed."""


class ProcessorTimeout(Exception):
    """The card processor did not answer in time."""


@dataclass(frozen=True, slots=True)
class Authorization:
    """An approved authorization: the processor's id for it, and the card it is on."""

    id: str
    brand: str
    last4: str


class CardProcessor(Protocol):
    """The card processor. Every operation but ``tokenize`` is idempotent per ``reference``:
    asked again with a reference it has done, it answers as the first time (a refusal
    included); an attempt that erred or timed out is not done, so it may be tried again."""

    async def tokenize(self, number: CardNumber) -> Card:
        """A token for the card: from then on the card is only ever named by it."""

    async def authorize(
        self, token: str, amount: int, currency: str, reference: str
    ) -> Authorization:
        """Hold ``amount`` on the card; raises :class:`Declined`, :class:`ProcessorError` or
        :class:`ProcessorTimeout`."""

    async def capture(self, authorization: str, amount: int, reference: str) -> None:
        """Charge ``amount`` of the authorization."""

    async def void(self, authorization: str, reference: str) -> None:
        """Drop the authorization's hold."""

    async def refund(self, authorization: str, amount: int, reference: str) -> None:
        """Give back ``amount`` of what was captured."""


class Deadline:
    """The processor with a deadline on every call: one that takes longer than ``timeout``
    seconds is abandoned and counts as :class:`ProcessorTimeout`."""

    def __init__(self, processor: CardProcessor, timeout: float) -> None:
        self.processor = processor
        self.timeout = timeout

    async def _within(self, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.timeout):
                return await call
        except TimeoutError as error:
            raise ProcessorTimeout("the card processor did not answer in time") from error

    async def tokenize(self, number: CardNumber) -> Card:
        return await self._within(self.processor.tokenize(number))

    async def authorize(
        self, token: str, amount: int, currency: str, reference: str
    ) -> Authorization:
        return await self._within(self.processor.authorize(token, amount, currency, reference))

    async def capture(self, authorization: str, amount: int, reference: str) -> None:
        await self._within(self.processor.capture(authorization, amount, reference))

    async def void(self, authorization: str, reference: str) -> None:
        await self._within(self.processor.void(authorization, reference))

    async def refund(self, authorization: str, amount: int, reference: str) -> None:
        await self._within(self.processor.refund(authorization, amount, reference))


async def tokenize(processor: CardProcessor, text: str) -> Card:
    """The processor's token for the card number in ``text`` (checked here first)."""
    return await processor.tokenize(CardNumber.parse(text))


# --- storage -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaymentQuery:
    """A page of payments: ``user_id`` None for all users' (an admin)."""

    limit: int
    user_id: str | None = None
    order_id: str | None = None
    after: tuple[datetime, str] | None = None


@dataclass(frozen=True, slots=True)
class PaymentPage:
    items: list[Payment]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Balance:
    account: str
    debits: int
    credits: int

    @property
    def balance(self) -> int:
        return self.debits - self.credits


@dataclass(frozen=True, slots=True)
class Ledger:
    """Every account's sums, computed from the entries; ``debits`` equals ``credits``."""

    accounts: list[Balance]
    movements: int

    @property
    def debits(self) -> int:
        return sum(account.debits for account in self.accounts)

    @property
    def credits(self) -> int:
        return sum(account.credits for account in self.accounts)

    def balance(self, account: str) -> int:
        return sum(found.balance for found in self.accounts if found.account == account)


@dataclass(frozen=True, slots=True)
class BookedEntry:
    account: str
    debit: int
    credit: int


@dataclass(frozen=True, slots=True)
class BookedMovement:
    """A movement as the ledger holds it."""

    id: int
    order_id: str
    payment_id: str
    kind: MovementKind
    amount: int
    currency: str
    created_at: datetime
    entries: list[BookedEntry]


@dataclass(frozen=True, slots=True)
class MovementPage:
    items: list[BookedMovement]
    next_cursor: str | None


class Payments(Protocol):
    """What the handlers need from storage, within the current transaction."""

    def get(self, order_id: str, *, for_update: bool = False) -> Payment | None: ...

    def add(self, payment: Payment) -> None: ...

    def save(self, payment: Payment) -> None: ...

    def book(self, payment: Payment, movement: Movement, now: datetime) -> None:
        """Write ``movement`` of ``payment`` to the ledger: the movement and its two entries."""

    def due(self, now: datetime, limit: int) -> list[str]:
        """Orders whose payment has an operation no worker holds (or whose lease ran out)."""

    def claim(self, order_id: str, token: str, until: datetime, now: datetime) -> bool:
        """Take the order's pending operation until ``until`` unless another worker holds it."""

    def listing(self, query: PaymentQuery, limit: int) -> list[Payment]:
        """Up to ``limit`` payments matching ``query``, oldest first, after its cursor."""

    def ledger(self) -> Ledger: ...

    def movements(
        self, order_id: str | None, after: int | None, limit: int
    ) -> list[BookedMovement]:
        """Up to ``limit`` movements by id, after ``after``, of one order or all."""


Store = Callable[[Session], Payments]
PAYMENT_CURSORS = CursorCodec(PaymentCursor)
MOVEMENT_CURSORS = CursorCodec(MovementCursor)
Wake = Callable[[], None]


def _nothing() -> None:
    """The wake of a unit of work with no worker to wake."""


# --- the checkout's commands -------------------------------------------------------------------


def authorize_payment(
    session: Session, store: Store, command: AuthorizePayment, wake: Wake = _nothing
) -> None:
    payments = store(session)
    now = _now()
    payment = payments.get(command.order_id, for_update=True)
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
        _settle(session, payments, payment, now, wake, new=True)
        return
    payment.authorize(now)
    _settle(session, payments, payment, now, wake)


def capture_payment(session: Session, store: Store, order_id: str, wake: Wake = _nothing) -> None:
    payments = store(session)
    now = _now()
    payment = payments.get(order_id, for_update=True)
    if payment is None or not payment.capture(now):
        status = payment and payment.status
        log.warning("capture refused: nothing authorized", order_id=order_id, status=status)
        return
    _settle(session, payments, payment, now, wake)


def void_payment(session: Session, store: Store, order_id: str, wake: Wake = _nothing) -> None:
    payments = store(session)
    now = _now()
    payment = payments.get(order_id, for_update=True)
    if payment is None:
        payment = Payment.tombstone(id=str(uuid.uuid4()), order_id=order_id, now=now)
        _settle(session, payments, payment, now, wake, new=True)
    elif payment.void(now):
        _settle(session, payments, payment, now, wake)
    else:
        # Voiding is for money held, not charged: a charge is given back by a refund.
        log.warning("void refused: the payment is captured", order_id=order_id)


def refund_payment(session: Session, store: Store, order_id: str, wake: Wake = _nothing) -> None:
    payments = store(session)
    now = _now()
    payment = payments.get(order_id, for_update=True)
    if payment is None:
        nothing = PaymentRefunded(order_id=order_id, amount=0, currency=NO_CURRENCY)
        record(session, nothing, aggregate=order_id)
        return
    payment.refund(now)
    _settle(session, payments, payment, now, wake)


# --- the worker --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claim:
    """A pending operation a worker took, with what the processor call needs; ``until`` is when
    its lease runs out."""

    order_id: str
    operation: Operation
    reference: str
    token: str
    card_token: str | None
    amount: int | None
    currency: str | None
    authorization_id: str | None
    captured_amount: int
    until: datetime | None = None


def _claim(payment: Payment, token: str, until: datetime) -> Claim:
    assert payment.pending is not None
    return Claim(
        order_id=payment.order_id,
        operation=payment.pending,
        reference=payment.reference(),
        token=token,
        card_token=payment.card_token,
        amount=payment.amount,
        currency=payment.currency,
        authorization_id=payment.authorization_id,
        captured_amount=payment.captured_amount,
        until=until,
    )


@dataclass(frozen=True, slots=True)
class Approved:
    authorization: Authorization | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str


@dataclass(frozen=True, slots=True)
class Unanswered:
    reason: str


Outcome = Approved | Refused | Unanswered


def claim_operations(
    session: Session, store: Store, now: datetime, lease: timedelta, limit: int
) -> list[Claim]:
    """Take up to ``limit`` due operations for ``lease``; those another worker took meanwhile
    are left to it."""
    payments = store(session)
    claims: list[Claim] = []
    for order_id in payments.due(now, limit):
        token = uuid.uuid4().hex
        if not payments.claim(order_id, token, now + lease, now):
            continue
        payment = payments.get(order_id)
        assert payment is not None
        claims.append(_claim(payment, token, now + lease))
    return claims


def record_outcome(
    session: Session,
    store: Store,
    claim: Claim,
    outcome: Outcome,
    now: datetime,
    wake: Wake = _nothing,
) -> bool:
    """Write what the processor answered; False when the claim was lost to another worker (its
    lease ran out), whose call with the same reference gets the same answer and records it."""
    payments = store(session)
    payment = payments.get(claim.order_id, for_update=True)
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
        found = outcome.authorization
        if found is None:
            payment.approved(now)
        else:
            payment.approved(
                now, authorization_id=found.id, card_brand=found.brand, card_last4=found.last4
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
    _settle(session, payments, payment, now, wake)
    return True


class Wakeup:
    """How work reaches the worker loop without waiting for its next poll.

    ``ring`` (also what calling it does) says a commit left an operation for the processor that
    no worker holds: the loop polls for due operations at once. While the loop runs it sets
    ``lease``: a command then takes the operation it leaves itself, in its own transaction, and
    ``hand`` passes it to the loop once committed, which calls the processor without a claim
    transaction of its own. An operation handed to a loop that stopped, or to a process that died,
    is taken again by a poll once its lease runs out, with the same reference.
    """

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None
        self._poll = True
        self._handed: deque[tuple[Claim, contextvars.Context]] = deque()
        self.lease: timedelta | None = None

    def start(self, lease: timedelta | None = None) -> None:
        """Begin listening, in the running event loop (an app may be started more than once);
        with ``lease``, commands lease and hand over what they leave."""
        self._event = asyncio.Event()
        self._poll = True
        self._handed.clear()
        self.lease = lease

    def stop(self) -> None:
        self.lease = None
        self._handed.clear()

    def __call__(self) -> None:
        self.ring()

    def ring(self) -> None:
        self._poll = True
        self.nudge()

    def nudge(self) -> None:
        """Wake the loop without asking it to poll (room for more work, say)."""
        if self._event is not None:
            self._event.set()

    def hand(self, claim: Claim) -> None:
        # With the context of the command that left it, so the processor call and the events it
        # records stay in the checkout's trace and carry its request id.
        self._handed.append((claim, contextvars.copy_context()))
        self.nudge()

    def handed(self) -> list[tuple[Claim, contextvars.Context]]:
        """The operations handed over since the last call, each with its command's context."""
        claims = list(self._handed)
        self._handed.clear()
        return claims

    def take_poll(self) -> bool:
        """Whether a poll was asked for since the last one (and clears the request)."""
        poll, self._poll = self._poll, False
        return poll

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 (a poll interval)
        """Until rung, nudged or handed work, or ``timeout`` seconds (then a poll is due)."""
        if self._event is None:
            self._event = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            self._poll = True
        self._event.clear()


Clock = Callable[[], datetime]


class Worker:
    """Carries out pending operations at the processor, outside any transaction. Give it the
    processor behind a :class:`Deadline`, so no call keeps it waiting for long.

    ``run`` is the service's background loop: it keeps up to ``batch`` operations at the
    processor at once, and takes more as soon as one is done, a commit leaves new work, or
    ``poll`` seconds have passed. ``run_once`` is one round of it, awaited to the end (for tests).
    """

    def __init__(
        self,
        uow: UnitOfWork,
        store: Store,
        processor: CardProcessor,
        *,
        lease: timedelta,
        poll: float = 0.2,
        batch: int = 20,
        wakeup: Wakeup | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.uow = uow
        self.store = store
        self.processor = processor
        self.lease = lease
        self.poll = poll
        self.batch = batch
        self.wakeup = wakeup or Wakeup()
        self.clock = clock or _now

    async def run(self) -> None:
        self.wakeup.start(self.lease)
        running: set[asyncio.Task[None]] = set()

        def launch(claim: Claim, context: contextvars.Context | None = None) -> None:
            task = asyncio.create_task(self._complete(claim), context=context)
            running.add(task)
            task.add_done_callback(running.discard)

        try:
            while True:
                # Handed operations are leased already: each is started at once.
                for claim, context in self.wakeup.handed():
                    launch(claim, context)
                room = self.batch - len(running)
                if room > 0 and self.wakeup.take_poll():
                    claims = await self.uow.run(
                        claim_operations, self.store, self.clock(), self.lease, room
                    )
                    for claim in claims:
                        launch(claim)
                    if len(claims) == room:
                        self.wakeup.ring()  # more may be due than there was room for
                await self.wakeup.wait(self.poll)
        finally:
            self.wakeup.stop()
            # What is cut short is taken again once its lease runs out, with the same reference.
            await cancel_and_wait(running)

    async def run_once(self) -> int:
        """Take what is due, call the processor for each concurrently, record the outcomes;
        how many operations were taken."""
        claims = await self.uow.run(
            claim_operations, self.store, self.clock(), self.lease, self.batch
        )
        await asyncio.gather(*(self._complete(claim) for claim in claims))
        return len(claims)

    async def call(self, claim: Claim) -> Outcome:
        """Ask the processor to do the claimed operation."""
        try:
            return await self._call(claim)
        except Declined as refusal:
            return Refused(refusal.reason)
        except ProcessorError:
            return Unanswered("processor_error")
        except (ProcessorTimeout, TimeoutError):
            return Unanswered("processor_timeout")

    async def _call(self, claim: Claim) -> Outcome:
        processor = self.processor
        if claim.operation is Operation.AUTHORIZE:
            assert claim.card_token is not None
            assert claim.amount is not None
            assert claim.currency is not None
            authorization = await processor.authorize(
                claim.card_token, claim.amount, claim.currency, claim.reference
            )
            return Approved(authorization)
        assert claim.authorization_id is not None
        if claim.operation is Operation.CAPTURE:
            assert claim.amount is not None
            await processor.capture(claim.authorization_id, claim.amount, claim.reference)
        elif claim.operation is Operation.VOID:
            await processor.void(claim.authorization_id, claim.reference)
        else:
            await processor.refund(claim.authorization_id, claim.captured_amount, claim.reference)
        return Approved()

    async def _complete(self, claim: Claim) -> None:
        try:
            if claim.until is not None and self.clock() >= claim.until:
                # Its lease ran out before the call could start: a poll takes it again.
                log.info("operation left to a poll", order_id=claim.order_id)
                return
            outcome = await self.call(claim)
            await self.uow.run(
                record_outcome, self.store, claim, outcome, self.clock(), self.wakeup
            )
        except Exception:
            # Nothing is recorded: the lease runs out and the operation is taken again, with the
            # same reference.
            log.exception(
                "processor operation not completed",
                order_id=claim.order_id,
                operation=claim.operation.value,
            )
        finally:
            self.wakeup.nudge()  # room for another operation


# --- the read side -----------------------------------------------------------------------------


def list_payments(session: Session, store: Store, query: PaymentQuery) -> PaymentPage:
    # One row more than the page shows whether another page follows.
    rows = store(session).listing(query, query.limit + 1)
    items = rows[: query.limit]
    last = items[-1] if len(rows) > query.limit else None
    after = None if last is None else PaymentCursor(last.created_at, last.id)
    cursor = None if after is None else PAYMENT_CURSORS.encode(after)
    return PaymentPage(items=items, next_cursor=cursor)


def payment_cursor(token: str) -> tuple[datetime, str]:
    after = PAYMENT_CURSORS.decode(token)
    return after.created_at, after.id


def ledger(session: Session, store: Store) -> Ledger:
    return store(session).ledger()


def list_movements(
    session: Session, store: Store, order_id: str | None, limit: int, cursor: str | None
) -> MovementPage:
    after = MOVEMENT_CURSORS.decode(cursor).id if cursor else None
    rows = store(session).movements(order_id, after, limit + 1)
    items = rows[:limit]
    more = len(rows) > limit
    next_cursor = MOVEMENT_CURSORS.encode(MovementCursor(items[-1].id)) if more else None
    return MovementPage(items=items, next_cursor=next_cursor)


# --- shared ------------------------------------------------------------------------------------


def _settle(
    session: Session,
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
    if payment.pending is not None and payment.lease_until is None:
        lease = wake.lease if isinstance(wake, Wakeup) else None
        if lease is not None:
            # The same lease a claim takes: another replica leaves the operation alone until it
            # runs out, and takes it then (should this process die before it is done).
            payment.lease_token = uuid.uuid4().hex
            payment.lease_until = now + lease
            handoff = _claim(payment, payment.lease_token, payment.lease_until)
    if new:
        payments.add(payment)
    else:
        payments.save(payment)
    for movement in payment.movements:
        payments.book(payment, movement, now)
    for answer in payment.answers:
        record(session, _event(payment, answer), aggregate=payment.order_id)
    payment.movements.clear()
    payment.answers.clear()
    if handoff is not None:
        assert isinstance(wake, Wakeup)
        hand, claim = wake.hand, handoff
        on_commit(session, lambda: hand(claim))
    elif payment.pending is not None and payment.lease_until is None:
        on_commit(session, wake)


def _event(payment: Payment, answer: Answer) -> IntegrationEvent:
    order_id = payment.order_id
    reply = answer.reply
    if reply is Reply.AUTHORIZED:
        assert payment.amount is not None
        assert payment.currency is not None
        return PaymentAuthorized(
            order_id=order_id,
            payment_id=payment.id,
            amount=payment.amount,
            currency=payment.currency,
            card_brand=payment.card_brand or "card",
            card_last4=payment.card_last4 or "",
        )
    if reply is Reply.DECLINED:
        reason = answer.reason or "declined"
        return PaymentDeclined(order_id=order_id, payment_id=payment.id, reason=reason)
    if reply is Reply.FAILED:
        reason = answer.reason or "processor_error"
        return PaymentFailed(order_id=order_id, payment_id=payment.id, reason=reason)
    if reply is Reply.CAPTURED:
        return PaymentCaptured(
            order_id=order_id,
            payment_id=payment.id,
            amount=payment.captured_amount,
            currency=payment.currency or NO_CURRENCY,
        )
    # A tombstone names no payment: the order never had one.
    payment_id = payment.id if payment.amount is not None else None
    if reply is Reply.VOIDED:
        return PaymentVoided(order_id=order_id, payment_id=payment_id)
    return PaymentRefunded(
        order_id=order_id,
        payment_id=payment_id,
        amount=payment.refunded_amount,
        currency=payment.currency or NO_CURRENCY,
    )


def _now() -> datetime:
    return datetime.now(UTC)
