"""Storage of payments and the ledger in SQL (SQLite or PostgreSQL), and the simulated card
processor.

The simulated processor keeps, in tables of its own (``processor_*``), what a real processor keeps
on its side: the cards it issued tokens for (brand, last four, and the behaviour the test number
selects; never the number) and the operations it has done, by the caller's reference.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    UniqueConstraint,
    bindparam,
    func,
    select,
    tuple_,
)

from agora.columns import serial, serial_key, timestamp
from agora.db import UnitOfWork, aware
from agora.sql import inserted_key, inserts_if_absent, take_lease
from payments.application import (
    Authorization,
    Declined,
    PaymentQuery,
    ProcessorError,
    ProcessorTimeout,
)
from payments.domain import (
    Account,
    Balance,
    BookedMovement,
    Card,
    CardNumber,
    Entry,
    Ledger,
    Movement,
    MovementKind,
    Operation,
    Payment,
    Status,
)

metadata = MetaData()

payments = Table(
    "payments",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("order_id", String(100), nullable=False, unique=True),
    Column("user_id", String(100), nullable=True),
    Column("amount", BigInteger, nullable=True),
    Column("currency", String(3), nullable=True),
    Column("card_token", String(64), nullable=True),
    Column("card_brand", String(20), nullable=True),
    Column("card_last4", String(4), nullable=True),
    Column("status", String(12), nullable=False),
    Column("reason", String(40), nullable=True),
    Column("captured_amount", BigInteger, nullable=False),
    Column("refunded_amount", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("authorization_id", String(64), nullable=True),
    Column("pending_operation", String(10), nullable=True),
    timestamp("lease_until", nullable=True),
    Column("lease_token", String(32), nullable=True),
    Column("failures", Integer, nullable=False),
    timestamp("created_at"),
    timestamp("updated_at"),
    CheckConstraint("amount IS NULL OR amount > 0", name="ck_payments_amount_positive"),
    CheckConstraint(
        "captured_amount >= 0 AND refunded_amount >= 0 AND refunded_amount <= captured_amount",
        name="ck_payments_amounts",
    ),
    Index("ix_payments_pending", "pending_operation", "lease_until"),
    Index("ix_payments_created", "created_at", "id"),
    Index("ix_payments_user_created", "user_id", "created_at", "id"),
)

ledger_movements = Table(
    "ledger_movements",
    metadata,
    serial_key(),
    Column("order_id", String(100), nullable=False),
    Column("payment_id", String(36), ForeignKey("payments.id"), nullable=False),
    Column("kind", String(10), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    timestamp("created_at"),
    CheckConstraint("amount > 0", name="ck_ledger_movements_amount_positive"),
    # A payment is held, released, captured and refunded at most once each: a second capture
    # could only come from a bug, and the database refuses it.
    UniqueConstraint("payment_id", "kind", name="uq_ledger_movements_payment_kind"),
    Index("ix_ledger_movements_order", "order_id", "id"),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    serial_key(),
    Column("movement_id", serial(), ForeignKey("ledger_movements.id"), nullable=False),
    Column("account", String(40), nullable=False),
    Column("debit", BigInteger, nullable=False),
    Column("credit", BigInteger, nullable=False),
    CheckConstraint(
        "debit >= 0 AND credit >= 0 AND (debit = 0 OR credit = 0) AND debit + credit > 0",
        name="ck_ledger_entries_one_side",
    ),
    Index("ix_ledger_entries_movement", "movement_id"),
    Index("ix_ledger_entries_account", "account"),
)

processor_cards = Table(
    "processor_cards",
    metadata,
    Column("token", String(64), primary_key=True),
    Column("brand", String(20), nullable=False),
    Column("last4", String(4), nullable=False),
    Column("behaviour", String(20), nullable=False),
    timestamp("created_at"),
)

processor_operations = Table(
    "processor_operations",
    metadata,
    Column("reference", String(200), primary_key=True),
    Column("kind", String(10), nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("token", String(64), nullable=True),
    Column("authorization_id", String(64), nullable=True),
    Column("amount", BigInteger, nullable=True),
    timestamp("created_at"),
    Index("ix_processor_operations_authorization", "authorization_id", "kind"),
)


def _payment(row: Row[Any]) -> Payment:
    fields = row._asdict()
    pending = fields.pop("pending_operation")
    fields["status"] = Status(fields["status"])
    for moment in ("created_at", "updated_at", "lease_until"):
        fields[moment] = aware(fields[moment])
    return Payment(**fields, pending=Operation(pending) if pending else None)


# The columns that keep the payment's field of the same name as it is: the others are its id (the
# key), its status and its pending operation (stored by their value).
_AS_THEY_ARE = tuple(
    column.name
    for column in payments.columns
    if column.name not in ("id", "status", "pending_operation")
)


def _values(payment: Payment) -> dict[str, Any]:
    """The payment's columns but its id."""
    values = {name: getattr(payment, name) for name in _AS_THEY_ARE}
    values["status"] = payment.status.value
    values["pending_operation"] = payment.pending.value if payment.pending else None
    return values


def _due(now: datetime) -> Any:
    return payments.c.pending_operation.is_not(None) & (
        payments.c.lease_until.is_(None) | (payments.c.lease_until <= now)
    )


# Built once, their values passed at each execution (ADR 57): a payment is read, written and
# booked several times in every checkout.
_BY_ORDER = select(payments).where(payments.c.order_id == bindparam("order_id"))
_BY_ORDER_FOR_UPDATE = _BY_ORDER.with_for_update()
_INSERT_PAYMENT = payments.insert()
_UPDATE_PAYMENT = payments.update().where(payments.c.id == bindparam("payment_id"))
_INSERT_MOVEMENT = ledger_movements.insert()


class SqlPayments:
    """The :class:`payments.application.Payments` port in SQL, within the caller's transaction."""

    def get(
        self, connection: Connection, order_id: str, *, for_update: bool = False
    ) -> Payment | None:
        statement = _BY_ORDER_FOR_UPDATE if for_update else _BY_ORDER
        row = connection.execute(statement, {"order_id": order_id}).first()
        return None if row is None else _payment(row)

    def add(self, connection: Connection, payment: Payment) -> None:
        connection.execute(_INSERT_PAYMENT, {"id": payment.id, **_values(payment)})

    def save(self, connection: Connection, payment: Payment) -> None:
        # The SET clause is the columns of the parameters: every one but the id.
        connection.execute(_UPDATE_PAYMENT, {"payment_id": payment.id, **_values(payment)})

    def book(
        self, connection: Connection, payment: Payment, movement: Movement, now: datetime
    ) -> None:
        result = connection.execute(
            _INSERT_MOVEMENT,
            {
                "order_id": payment.order_id,
                "payment_id": payment.id,
                "kind": movement.kind.value,
                "amount": movement.amount,
                "currency": movement.currency,
                "created_at": now,
            },
        )
        movement_id = inserted_key(result)
        connection.execute(
            ledger_entries.insert(),
            [
                {
                    "movement_id": movement_id,
                    "account": entry.account.value,
                    "debit": entry.debit,
                    "credit": entry.credit,
                }
                for entry in movement.entries
            ],
        )

    def due(self, connection: Connection, now: datetime, limit: int) -> list[str]:
        statement = (
            select(payments.c.order_id)
            .where(_due(now))
            .order_by(payments.c.updated_at)
            .limit(limit)
        )
        return list(connection.execute(statement).scalars())

    def claim(
        self, connection: Connection, order_id: str, token: str, until: datetime, now: datetime
    ) -> bool:
        where = (payments.c.order_id == order_id, _due(now))
        return take_lease(connection, payments, *where, token=token, until=until)

    def listing(self, connection: Connection, query: PaymentQuery, limit: int) -> list[Payment]:
        statement = select(payments)
        if query.user_id is not None:
            statement = statement.where(payments.c.user_id == query.user_id)
        if query.order_id is not None:
            statement = statement.where(payments.c.order_id == query.order_id)
        if query.after is not None:
            created_at, payment_id = query.after
            statement = statement.where(
                tuple_(payments.c.created_at, payments.c.id) > tuple_(created_at, payment_id)
            )
        statement = statement.order_by(payments.c.created_at, payments.c.id).limit(limit)
        return [_payment(row) for row in connection.execute(statement)]

    def ledger(self, connection: Connection) -> Ledger:
        sums = connection.execute(
            select(
                ledger_entries.c.account,
                func.coalesce(func.sum(ledger_entries.c.debit), 0),
                func.coalesce(func.sum(ledger_entries.c.credit), 0),
            )
            .group_by(ledger_entries.c.account)
            .order_by(ledger_entries.c.account)
        )
        accounts = [
            Balance(account=account, debits=int(debits), credits=int(credits))
            for account, debits, credits in sums
        ]
        count = connection.execute(select(func.count()).select_from(ledger_movements))
        return Ledger(accounts=accounts, movements=int(count.scalar_one()))

    def movements(
        self, connection: Connection, order_id: str | None, after: int | None, limit: int
    ) -> list[BookedMovement]:
        statement = select(ledger_movements)
        if order_id is not None:
            statement = statement.where(ledger_movements.c.order_id == order_id)
        if after is not None:
            statement = statement.where(ledger_movements.c.id > after)
        rows = connection.execute(statement.order_by(ledger_movements.c.id).limit(limit)).all()
        entries: dict[int, list[Entry]] = {row.id: [] for row in rows}
        if entries:
            found = connection.execute(
                select(
                    ledger_entries.c.movement_id,
                    ledger_entries.c.account,
                    ledger_entries.c.debit,
                    ledger_entries.c.credit,
                )
                .where(ledger_entries.c.movement_id.in_(list(entries)))
                .order_by(ledger_entries.c.id)
            )
            for movement_id, account, debit, credit in found:
                entries[movement_id].append(Entry(Account(account), debit, credit))
        return [
            BookedMovement(
                id=row.id,
                order_id=row.order_id,
                payment_id=row.payment_id,
                kind=MovementKind(row.kind),
                amount=row.amount,
                currency=row.currency,
                created_at=aware(row.created_at) or row.created_at,
                entries=entries[row.id],
            )
            for row in rows
        ]


# --- the simulated card processor --------------------------------------------------------------


class Behaviour(StrEnum):
    """What the simulated processor does with a card."""

    APPROVE = "approve"
    DECLINE = "decline"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    ERROR = "error"
    TIMEOUT = "timeout"


# The usual test card numbers; any other valid number is approved.
TEST_CARDS: dict[str, Behaviour] = {
    "4242424242424242": Behaviour.APPROVE,
    "4000000000000002": Behaviour.DECLINE,
    "4000000000009995": Behaviour.INSUFFICIENT_FUNDS,
    "4000000000000119": Behaviour.ERROR,
    "4000000000000259": Behaviour.TIMEOUT,
}

APPROVED = "approved"
# How a declined authorization is recorded, and the reason it is answered with.
REFUSALS = {Behaviour.DECLINE: "declined", Behaviour.INSUFFICIENT_FUNDS: "insufficient_funds"}


def behaviour_of(number: CardNumber) -> Behaviour:
    return TEST_CARDS.get(number.digits, Behaviour.APPROVE)


class SimulatedProcessor:
    """A card processor in payments' own database, behind the
    :class:`payments.application.CardProcessor` port.

    The error card fails every authorization; the timeout card keeps the caller waiting
    ``hang`` seconds (longer than the caller's deadline) before it gives up. Captures, voids
    and refunds of an authorization it gave always succeed.
    """

    def __init__(self, uow: UnitOfWork, *, hang: float) -> None:
        self.uow = uow
        self.hang = hang

    async def tokenize(self, number: CardNumber) -> Card:
        card = Card(token=f"tok_{secrets.token_hex(12)}", brand=number.brand, last4=number.last4)
        await self.uow.run(_add_card, card, behaviour_of(number))
        return card

    async def authorize(
        self, token: str, amount: int, currency: str, reference: str
    ) -> Authorization:
        result = await self.uow.run(_authorize, token, amount, reference)
        if result is Behaviour.ERROR:
            raise ProcessorError("the card processor failed (simulated)")
        if result is Behaviour.TIMEOUT:
            await asyncio.sleep(self.hang)
            raise ProcessorTimeout("the card processor did not answer (simulated)")
        if isinstance(result, str):
            raise Declined(result)
        return result

    async def capture(self, authorization: str, amount: int, reference: str) -> None:
        await self.uow.run(_settle, Operation.CAPTURE, authorization, amount, reference)

    async def void(self, authorization: str, reference: str) -> None:
        await self.uow.run(_settle, Operation.VOID, authorization, None, reference)

    async def refund(self, authorization: str, amount: int, reference: str) -> None:
        await self.uow.run(_settle, Operation.REFUND, authorization, amount, reference)


# The simulated processor's, built once too: it tokenizes, authorizes and captures in every
# checkout.
_INSERT_CARD = processor_cards.insert()
_CARD = select(processor_cards.c.brand, processor_cards.c.last4, processor_cards.c.behaviour).where(
    processor_cards.c.token == bindparam("token")
)
_AUTHORIZED = select(processor_operations.c.reference).where(
    processor_operations.c.authorization_id == bindparam("authorization_id"),
    processor_operations.c.kind == Operation.AUTHORIZE.value,
    processor_operations.c.outcome == APPROVED,
)
_DONE = select(processor_operations.c.outcome, processor_operations.c.authorization_id).where(
    processor_operations.c.reference == bindparam("reference")
)
# An operation recorded unless its reference was, answering with the row written.
_RECORD = {
    dialect: insert.returning(
        processor_operations.c.outcome, processor_operations.c.authorization_id
    )
    for dialect, insert in inserts_if_absent(processor_operations).items()
}


def _add_card(connection: Connection, card: Card, behaviour: Behaviour) -> None:
    connection.execute(
        _INSERT_CARD,
        {
            "token": card.token,
            "brand": card.brand,
            "last4": card.last4,
            "behaviour": behaviour.value,
            "created_at": datetime.now(UTC),
        },
    )


def _authorize(
    connection: Connection, token: str, amount: int, reference: str
) -> Authorization | Behaviour | str:
    """An authorization, the reason of a refusal (a string), or the error or timeout
    behaviour (nothing recorded: the attempt may be made again)."""
    card = connection.execute(_CARD, {"token": token}).first()
    # A token the processor never issued is a card it declines.
    behaviour = Behaviour(card.behaviour) if card is not None else Behaviour.DECLINE
    if behaviour in (Behaviour.ERROR, Behaviour.TIMEOUT):
        done = _done(connection, reference)
        if done is None:
            return behaviour
    else:
        outcome = REFUSALS.get(behaviour, APPROVED)
        done = _record(
            connection,
            reference=reference,
            kind=Operation.AUTHORIZE.value,
            outcome=outcome,
            token=token,
            authorization_id=f"auth_{uuid.uuid4().hex}" if outcome == APPROVED else None,
            amount=amount,
        )
    if done.outcome != APPROVED:
        return str(done.outcome)
    assert card is not None
    return Authorization(id=done.authorization_id, brand=card.brand, last4=card.last4)


def _settle(
    connection: Connection, kind: Operation, authorization: str, amount: int | None, reference: str
) -> None:
    given = connection.execute(_AUTHORIZED, {"authorization_id": authorization}).first()
    if given is None:
        raise Declined("unknown_authorization")
    _record(
        connection,
        reference=reference,
        kind=kind.value,
        outcome=APPROVED,
        authorization_id=authorization,
        amount=amount,
    )


def _done(connection: Connection, reference: str) -> Row[Any, Any] | None:
    return connection.execute(_DONE, {"reference": reference}).first()


def _record(connection: Connection, *, reference: str, **values: Any) -> Row[Any, Any]:
    """Record an operation as done unless one with the reference was (asked before, or by a
    concurrent call); either way, the first one recorded. One statement when it is new."""
    statement = _RECORD[connection.dialect.name]
    inserted = connection.execute(
        statement, {"reference": reference, "created_at": datetime.now(UTC), **values}
    ).first()
    done = inserted if inserted is not None else _done(connection, reference)
    assert done is not None
    return done
