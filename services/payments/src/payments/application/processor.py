"""The card processor as payments sees it: the port, a deadline on every call, what a worker
claims to call it for, and what the call came to."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from payments.domain import Card, CardNumber, Operation, Payment

T = TypeVar("T")

# --- the port ------------------------------------------------------------------------


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


# --- a worker's call ---------------------------------------------------------------------------


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

    @classmethod
    def of(cls, payment: Payment, token: str, until: datetime) -> Claim:
        assert payment.pending is not None
        return cls(
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


async def ask(processor: CardProcessor, claim: Claim) -> Outcome:
    """Ask the processor to do the claimed operation: what it answered, or why it did not."""
    try:
        return await _ask(processor, claim)
    except Declined as refusal:
        return Refused(refusal.reason)
    except ProcessorError:
        return Unanswered("processor_error")
    except (ProcessorTimeout, TimeoutError):
        return Unanswered("processor_timeout")


async def _ask(processor: CardProcessor, claim: Claim) -> Outcome:
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
