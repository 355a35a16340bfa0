"""Payments' entry points: the HTTP routes and the checkout's commands. Parse, run one handler,
answer.

A card number comes in on one route only (``POST /payments/cards``), goes straight to the
processor for a token and is never stored, logged or echoed: a bad one gets a 422 that says what
is wrong with it without repeating it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from sqlalchemy import Connection

from agora.cursor import REFUSED_CURSOR, PageOut
from agora.deps import Admin, CurrentUser, Uow, provided
from agora.messaging import CloudEvent, Subscription
from agora.query import QueryParams, page_cursor, page_limit
from contracts.payments import AuthorizePayment, CapturePayment, RefundPayment, VoidPayment
from payments import application
from payments.application import PaymentQuery
from payments.domain import CARD_INPUT_MAX, PAGE_DEFAULT, PAGE_MAX

JSON = "application/json"

router = APIRouter(tags=["payments"])
Parts = Annotated[application.Parts, Depends(provided(application.Parts))]


class PaymentOut(BaseModel):
    """An order's payment. ``status``: pending (its first authorization not answered yet),
    authorized, captured, voided, refunded, declined or failed."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    order_id: str
    amount: int | None = Field(
        description="Minor units of `currency`; null when a void came before any authorization."
    )
    currency: str | None
    card_brand: str | None
    card_last4: str | None
    status: str
    captured_amount: int
    refunded_amount: int
    created_at: datetime
    updated_at: datetime


class PaymentPage(PageOut[PaymentOut]):
    pass


class AccountOut(BaseModel):
    account: str
    debits: int
    credits: int
    balance: int = Field(description="debits - credits")


class LedgerOut(BaseModel):
    accounts: list[AccountOut]
    debits: int
    credits: int
    movements: int


class EntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    account: str
    debit: int
    credit: int


class MovementOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    order_id: str
    kind: str = Field(description="hold, release, capture or refund.")
    amount: int
    currency: str
    created_at: datetime
    entries: list[EntryOut]


class MovementPage(PageOut[MovementOut]):
    pass


class NewCard(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    card_number: str = Field(
        max_length=CARD_INPUT_MAX,
        description="12 to 19 digits passing the Luhn check; spaces between them allowed.",
        # What ``CardNumber.parse`` takes but the Luhn check, which no pattern states.
        json_schema_extra={"pattern": r"^ *(?:[0-9] *){12,19}$"},
    )


class CardOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    token: str = Field(description="Names the card in AuthorizePayment.")
    brand: str = Field(description="visa, mastercard, amex, or card.")
    last4: str


class _Query(QueryParams):
    """A query string in which an empty value (``?order_id=``) means the parameter is absent."""


class PaymentsQuery(_Query):
    order_id: str | None = Field(default=None, max_length=100)
    limit: int = page_limit(PAGE_DEFAULT, PAGE_MAX, clamped=False)
    cursor: str | None = page_cursor()


MovementsQuery = PaymentsQuery

_PAYMENTS = TypeAdapter(PaymentPage)
_LEDGER = TypeAdapter(LedgerOut)
_MOVEMENTS = TypeAdapter(MovementPage)
_CARD = TypeAdapter(CardOut)


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type=JSON)


@router.get("/payments", response_model=PaymentPage, responses=REFUSED_CURSOR)
async def list_payments(
    query: Annotated[PaymentsQuery, Query()], user: CurrentUser, uow: Uow, parts: Parts
) -> Response:
    """Payments, oldest first, a page at a time: a customer's own; an admin's view, everyone's."""
    request = PaymentQuery(
        limit=query.limit,
        user_id=None if user.is_admin else user.id,
        order_id=query.order_id,
        after=application.payment_cursor(query.cursor) if query.cursor else None,
    )
    page = await uow.query(application.list_payments, parts.payments, request)
    return _json(_PAYMENTS.dump_json(PaymentPage.of(page, PaymentOut.model_validate)))


@router.get("/payments/ledger", response_model=LedgerOut)
async def ledger(_admin: Admin, uow: Uow, parts: Parts) -> Response:
    """Every account's debits, credits and balance, summed from the entries (admin only)."""
    found = await uow.query(application.ledger, parts.payments)
    accounts = [
        AccountOut(
            account=account.account,
            debits=account.debits,
            credits=account.credits,
            balance=account.balance,
        )
        for account in found.accounts
    ]
    body = LedgerOut(
        accounts=accounts, debits=found.debits, credits=found.credits, movements=found.movements
    )
    return _json(_LEDGER.dump_json(body))


@router.get("/payments/ledger/movements", response_model=MovementPage, responses=REFUSED_CURSOR)
async def ledger_movements(
    query: Annotated[MovementsQuery, Query()], _admin: Admin, uow: Uow, parts: Parts
) -> Response:
    """The ledger's movements with their two entries, in the order they were booked (admin)."""
    page = await uow.query(
        application.list_movements, parts.payments, query.order_id, query.limit, query.cursor
    )
    return _json(_MOVEMENTS.dump_json(MovementPage.of(page, MovementOut.model_validate)))


@router.post("/payments/cards", status_code=201, response_model=CardOut)
async def tokenize_card(body: NewCard, _user: CurrentUser, parts: Parts) -> Response:
    """Exchange a card number for a token (any logged-in user). Only the token, the brand and
    the last four digits are kept; the number goes no further than the processor."""
    card = await application.tokenize(parts.processor, body.card_number)
    return _json(_CARD.dump_json(CardOut.model_validate(card)), 201)


def subscriptions(parts: application.Parts) -> tuple[Subscription, ...]:
    """The checkout's commands. Each only writes down what is asked, in the transaction that
    records the command in the inbox; the parts' ``wakeup`` starts the worker once it is
    committed."""
    payments, wake = parts.payments, parts.wakeup

    def authorize_payment(connection: Connection, command: AuthorizePayment, _: CloudEvent) -> None:
        application.authorize_payment(connection, payments, command, wake)

    def capture_payment(connection: Connection, command: CapturePayment, _: CloudEvent) -> None:
        application.capture_payment(connection, payments, command.order_id, wake)

    def void_payment(connection: Connection, command: VoidPayment, _: CloudEvent) -> None:
        application.void_payment(connection, payments, command.order_id, wake)

    def refund_payment(connection: Connection, command: RefundPayment, _: CloudEvent) -> None:
        application.refund_payment(connection, payments, command.order_id, wake)

    return (
        Subscription(AuthorizePayment, authorize_payment),
        Subscription(CapturePayment, capture_payment),
        Subscription(VoidPayment, void_payment),
        Subscription(RefundPayment, refund_payment),
    )
