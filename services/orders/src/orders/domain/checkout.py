"""The checkout saga's rules: a state machine (:class:`Checkout`) whose every method
takes an answer from inventory or payments (or a deadline tick) and returns the new state with
the commands to send. The saga's kinds of step (Richardson):

* reserving stock is compensatable (ReleaseStock gives it back);
* authorizing the payment is the pivot, the last step that may fail on a business rule;
* capturing the payment and committing the stock are retriable: they are resent until both are
  acknowledged, however long that takes.

Every step has a deadline, so no checkout waits for ever: a reservation or authorization whose
answer does not come is resent a few times and then compensated; a completion or a compensation
is resent for ever, the wait doubling up to a ceiling.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum


class Status(StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"


class Step(StrEnum):
    RESERVING = "reserving"
    AUTHORIZING = "authorizing"
    COMPLETING = "completing"
    COMPENSATING = "compensating"
    DONE = "done"


class Reason(StrEnum):
    """Why an order was cancelled (``contracts.orders.OrderCancelled.reason``)."""

    OUT_OF_STOCK = "out_of_stock"
    PAYMENT_DECLINED = "payment_declined"
    PAYMENT_FAILED = "payment_failed"
    CUSTOMER_CANCELLED = "customer_cancelled"
    STOCK_TIMEOUT = "stock_timeout"
    PAYMENT_TIMEOUT = "payment_timeout"
    RESERVATION_EXPIRED = "reservation_expired"


class Command(StrEnum):
    """What the saga asks of inventory and payments."""

    RESERVE_STOCK = "ReserveStock"
    RELEASE_STOCK = "ReleaseStock"
    COMMIT_STOCK = "CommitStock"
    AUTHORIZE_PAYMENT = "AuthorizePayment"
    CAPTURE_PAYMENT = "CapturePayment"
    VOID_PAYMENT = "VoidPayment"
    REFUND_PAYMENT = "RefundPayment"


# Reasons in inventory's and payments' answers that the saga tells apart.
OUT_OF_STOCK = "out_of_stock"
RESERVATION_EXPIRED = "reservation_expired"


class OrderCharged(Exception):
    """Order already charged."""


class CheckoutsBusy(Exception):
    """Too many checkouts under way."""

    # A new order would only lengthen every other checkout's wait (ADR 54).

    def __init__(self, retry_after: timedelta) -> None:
        super().__init__("too many checkouts are under way; try again in a moment")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Rules:
    """The saga's timing, from the service's settings."""

    step_timeout: timedelta = timedelta(seconds=5)
    reserve_attempts: int = 3
    authorize_attempts: int = 3
    retry_backoff: timedelta = timedelta(seconds=0.5)
    backoff_max: timedelta = timedelta(seconds=30)
    saga_deadline: timedelta = timedelta(seconds=60)
    # Checkouts under way at once, across the replicas; a new order past them is refused.
    max_in_flight: int = 250
    # What a refused shopper is told to wait before trying again.
    busy_retry_after: timedelta = timedelta(seconds=1)

    def backoff(self, attempt: int) -> timedelta:
        """The wait after the ``attempt``-th send of a step that must eventually succeed."""
        return min(self.step_timeout * (1 << max(attempt - 1, 0)), self.backoff_max)


Commands = tuple[Command, ...]


@dataclass(frozen=True, slots=True)
class Checkout:
    """One order's checkout saga.

    ``deadline_at`` is when the timer acts next (None once done). ``attempt`` counts the sends
    of the current step's command(s); compensating and done keep the count of the step that
    ended, so how hard it tried stays visible. ``silent`` counts the sends since the step began
    or since its last answer. While authorizing, ``failures`` counts PaymentFailed answers apart
    from the sends that met silence: a processor that keeps failing ends in ``payment_failed``,
    a payments that says nothing in ``payment_timeout``, however slow answers interleave with
    resends. ``reserved`` ... ``committed`` say what inventory and payments acknowledged;
    ``awaiting_*`` are the compensations sent and not yet acknowledged (a refund waits for the
    capture it gives back). Each method returns the next state and the commands to send; an
    answer that does not fit the state changes nothing.
    """

    step: Step
    attempt: int
    deadline_at: datetime | None
    reason: Reason | None = None
    reserved: bool = False
    authorized: bool = False
    captured: bool = False
    committed: bool = False
    awaiting_release: bool = False
    awaiting_void: bool = False
    awaiting_refund: bool = False
    cancel_requested: bool = False
    # A PaymentFailed came and the authorization goes again at ``deadline_at``.
    retry_scheduled: bool = False
    failures: int = 0
    silent: int = 1

    @classmethod
    def begin(cls, rules: Rules, now: datetime) -> tuple[Checkout, Commands]:
        checkout = cls(step=Step.RESERVING, attempt=1, deadline_at=now + rules.step_timeout)
        return checkout, (Command.RESERVE_STOCK,)

    @property
    def status(self) -> Status:
        if self.step is not Step.DONE:
            return Status.PENDING
        return Status.CONFIRMED if self.reason is None else Status.CANCELLED

    # --- inventory's answers -------------------------------------------------------------------

    def stock_reserved(self, rules: Rules, now: datetime) -> tuple[Checkout, Commands]:
        if self.step is Step.RESERVING:
            authorizing = replace(self._enter(Step.AUTHORIZING, rules, now), reserved=True)
            return authorizing, (Command.AUTHORIZE_PAYMENT,)
        # Reserved before the release that is on its way: the release gives it back.
        return self, ()

    def stock_rejected(self, reason: str, rules: Rules, now: datetime) -> tuple[Checkout, Commands]:
        if self.step is Step.RESERVING and reason == OUT_OF_STOCK:
            # Nothing was taken: nothing to give back.
            return self._finish(Reason.OUT_OF_STOCK), ()
        if self.step is Step.COMPLETING and reason == RESERVATION_EXPIRED and not self.committed:
            # The units went to others after the reservation expired: the sale cannot be made.
            # The customer gets back what the capture takes (once it is acknowledged).
            return self._compensate(Reason.RESERVATION_EXPIRED, rules, now, refund=True)
        # "released": a reservation that came after our release was refused, as it should be.
        return self, ()

    def stock_released(self, rules: Rules, now: datetime) -> tuple[Checkout, Commands]:
        # An expiry outside a compensation changes nothing: the commit will tell whether the units
        # are still there.
        return self._given_back(self.awaiting_release, replace(self, awaiting_release=False))

    def stock_committed(self, rules: Rules, now: datetime) -> tuple[Checkout, Commands]:
        if self.step is Step.COMPLETING:
            return self._confirmed(replace(self, committed=True)), ()
        return self, ()

    # --- payments' answers ---------------------------------------------------------------------

    def payment_authorized(self, rules: Rules, now: datetime) -> tuple[Checkout, Commands]:
        if self.step is Step.AUTHORIZING:
            # The pivot: from here the sale goes through, whatever it takes.
            completing = replace(self._enter(Step.COMPLETING, rules, now), authorized=True)
            return completing, (Command.CAPTURE_PAYMENT, Command.COMMIT_STOCK)
        # Authorized before the void that is on its way: the void drops it.
        return self, ()

    def payment_declined(
        self, reason: str, rules: Rules, now: datetime
    ) -> tuple[Checkout, Commands]:
        if self.step is Step.AUTHORIZING:
            return self._compensate(Reason.PAYMENT_DECLINED, rules, now, release=True)
        # "voided": an authorization that came after our void was refused, as it should be.
        return self, ()

    def payment_failed(self, rules: Rules, now: datetime) -> tuple[Checkout, Commands]:
        if self.step is not Step.AUTHORIZING or self.retry_scheduled:
            return self, ()
        failed = replace(self, failures=self.failures + 1)
        if failed.failures < rules.authorize_attempts:
            retry = replace(failed, retry_scheduled=True, deadline_at=now + rules.retry_backoff)
            return retry, ()
        # The void is a tombstone: an authorization still on its way is refused.
        return failed._compensate(Reason.PAYMENT_FAILED, rules, now, release=True, void=True)

    def payment_captured(self, rules: Rules, now: datetime) -> tuple[Checkout, Commands]:
        if self.step is Step.COMPLETING:
            return self._confirmed(replace(self, captured=True)), ()
        if self.step is Step.COMPENSATING and self.awaiting_refund and not self.captured:
            refunding = replace(self, captured=True, deadline_at=now + rules.step_timeout)
            return refunding, (Command.REFUND_PAYMENT,)
        return self, ()

    def payment_voided(self, rules: Rules, now: datetime) -> tuple[Checkout, Commands]:
        return self._given_back(self.awaiting_void, replace(self, awaiting_void=False))

    def payment_refunded(self, rules: Rules, now: datetime) -> tuple[Checkout, Commands]:
        awaited = self.awaiting_refund and self.captured
        return self._given_back(awaited, replace(self, awaiting_refund=False))

    # --- the timer and the customer ------------------------------------------------------------

    def deadline(self, rules: Rules, now: datetime) -> tuple[Checkout, Commands]:
        """What to do when ``now`` is at or past ``deadline_at``; nothing before it."""
        if self.deadline_at is None or now < self.deadline_at:
            return self, ()
        if self.step is Step.RESERVING:
            if self.attempt < rules.reserve_attempts:
                return self._again(rules.step_timeout, now), (Command.RESERVE_STOCK,)
            # The release is a tombstone when the reservation never happened.
            return self._compensate(Reason.STOCK_TIMEOUT, rules, now, release=True)
        if self.step is Step.AUTHORIZING:
            if self.retry_scheduled:
                # The pause after a failure is over: a new try, the first send since an answer.
                retry = replace(self._again(rules.step_timeout, now), silent=1)
                return retry, (Command.AUTHORIZE_PAYMENT,)
            if self.silent < rules.authorize_attempts:
                return self._again(rules.step_timeout, now), (Command.AUTHORIZE_PAYMENT,)
            return self._compensate(Reason.PAYMENT_TIMEOUT, rules, now, release=True, void=True)
        if self.step is Step.COMPLETING:
            missing = []
            if not self.captured:
                missing.append(Command.CAPTURE_PAYMENT)
            if not self.committed:
                missing.append(Command.COMMIT_STOCK)
            return self._again(rules.backoff(self.attempt + 1), now), tuple(missing)
        # Compensating: a compensation must eventually succeed.
        wait = rules.backoff(self.silent + 1)
        again = replace(self, silent=self.silent + 1, deadline_at=now + wait)
        return again, self._compensations()

    def cancel(self, rules: Rules, now: datetime) -> tuple[Checkout, Commands]:
        """The customer (or an admin) cancels. :class:`OrderCharged` once the pivot is passed."""
        if self.step is Step.RESERVING:
            checkout = replace(self, cancel_requested=True)
            return checkout._compensate(Reason.CUSTOMER_CANCELLED, rules, now, release=True)
        if self.step is Step.AUTHORIZING:
            # A void before the authorization is a tombstone: a late authorization is refused.
            checkout = replace(self, cancel_requested=True)
            return checkout._compensate(
                Reason.CUSTOMER_CANCELLED, rules, now, release=True, void=True
            )
        if self.step is Step.COMPLETING or self.status is Status.CONFIRMED:
            raise OrderCharged("the order is paid: it can no longer be cancelled")
        # Compensating or cancelled already: nothing more to do.
        return self, ()

    # --- helpers -------------------------------------------------------------------------------

    def _enter(self, step: Step, rules: Rules, now: datetime) -> Checkout:
        return replace(
            self,
            step=step,
            attempt=1,
            silent=1,
            failures=0,
            deadline_at=now + rules.step_timeout,
            retry_scheduled=False,
        )

    def _again(self, wait: timedelta, now: datetime) -> Checkout:
        return replace(
            self,
            attempt=self.attempt + 1,
            silent=self.silent + 1,
            deadline_at=now + wait,
            retry_scheduled=False,
        )

    def _compensate(
        self,
        reason: Reason,
        rules: Rules,
        now: datetime,
        *,
        release: bool = False,
        void: bool = False,
        refund: bool = False,
    ) -> tuple[Checkout, Commands]:
        # ``attempt`` keeps the sends of the step that gave up: how hard it tried stays visible.
        checkout = replace(
            self,
            step=Step.COMPENSATING,
            silent=1,
            deadline_at=now + rules.step_timeout,
            retry_scheduled=False,
            reason=reason,
            awaiting_release=release,
            awaiting_void=void,
            awaiting_refund=refund,
        )
        return Checkout._settled(checkout), checkout._compensations()

    def _compensations(self) -> Commands:
        """The compensations still awaited, as commands to (re)send."""
        commands = []
        if self.awaiting_release:
            commands.append(Command.RELEASE_STOCK)
        if self.awaiting_void:
            commands.append(Command.VOID_PAYMENT)
        if self.awaiting_refund:
            # Nothing to give back until the capture is acknowledged: see it through first.
            commands.append(Command.REFUND_PAYMENT if self.captured else Command.CAPTURE_PAYMENT)
        return tuple(commands)

    def _given_back(self, awaited: bool, acknowledged: Checkout) -> tuple[Checkout, Commands]:
        """A compensation's acknowledgement: ``acknowledged`` (no longer awaiting it), settled, when
        the checkout is compensating and ``awaited`` it; otherwise nothing changes."""
        if self.step is Step.COMPENSATING and awaited:
            return self._settled(acknowledged), ()
        return self, ()

    @staticmethod
    def _settled(checkout: Checkout) -> Checkout:
        """``checkout``, cancelled when no compensation is awaited any more."""
        if checkout.awaiting_release or checkout.awaiting_void or checkout.awaiting_refund:
            return checkout
        return checkout._finish(checkout.reason)

    @staticmethod
    def _confirmed(checkout: Checkout) -> Checkout:
        return checkout._finish(None) if checkout.captured and checkout.committed else checkout

    def _finish(self, reason: Reason | None) -> Checkout:
        return replace(self, step=Step.DONE, reason=reason, deadline_at=None, retry_scheduled=False)
