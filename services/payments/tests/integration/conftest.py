"""Payments on SQLite and on PostgreSQL (a database per test or per module, from agora-tools'
pytest plugin): the app with access tokens signed by a test key, and a bench that sends the
checkout's commands through an in-memory bus and runs the worker one round at a time, on a clock
the test moves.

Tokens are signed here the way identity signs them (EdDSA, ``typ: at+jwt``, a ``kid``); the app
gets a ``TokenVerifier`` whose key source answers with this test key's JWKS.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Connection, select

from agora.db import UnitOfWork
from agora.messaging.envelope import CloudEvent
from agora.messaging.schema import outbox
from agora_tools.pytest_plugin import Clock, Service, on_migrated
from agora_tools.testing import InMemoryBus, SigningKey, User
from contracts.base import IntegrationCommand
from contracts.payments import AuthorizePayment, CapturePayment, RefundPayment, VoidPayment
from payments import application
from payments.adapters import SimulatedProcessor, SqlPayments, processor_operations
from payments.application import Claim, Deadline, Ledger, Worker, claim_operations
from payments.bootstrap import MIGRATIONS, create_app
from payments.domain import Account, CardNumber, Payment
from payments.entrypoints import subscriptions
from payments.settings import PaymentsSettings

KEY = SigningKey()

APPROVED = "4242 4242 4242 4242"
DECLINED = "4000 0000 0000 0002"
INSUFFICIENT_FUNDS = "4000 0000 0000 9995"
PROCESSOR_ERROR = "4000 0000 0000 0119"
PROCESSOR_TIMEOUT = "4000 0000 0000 0259"
# Short, so the timeout card costs the tests little; the simulated processor hangs twice as long.
PROCESSOR_DEADLINE = 0.2


sign = KEY.sign


a_user = KEY.user  # a new customer, with the roles it is given besides

SERVICE = Service.standard(
    PaymentsSettings,
    create_app,
    KEY,
    migrations=MIGRATIONS,
    processor_timeout=PROCESSOR_DEADLINE,
)
settings_for = SERVICE.settings_for
app_for = SERVICE.app_for


# The plugin's fixtures: ``shared`` one app per module, whose tests must not depend on what the
# others did.
service = SERVICE.fixture()


@dataclass
class Bench:
    """Payments without its HTTP side: commands go in through an in-memory bus, the worker runs
    when the test says so, and what payments recorded is read straight from its database."""

    uow: UnitOfWork
    processor: SimulatedProcessor
    worker: Worker
    bus: InMemoryBus
    clock: Clock
    wakes: list[str] = field(default_factory=list)

    async def send(self, command: IntegrationCommand) -> None:
        await self.bus.publish(command, aggregate=str(getattr(command, "order_id", "")))

    async def card(self, number: str = APPROVED) -> str:
        card = await self.processor.tokenize(CardNumber.parse(number))
        return card.token

    async def authorize(
        self, order_id: str, number: str = APPROVED, *, amount: int = 4990, user_id: str = "u-1"
    ) -> None:
        command = AuthorizePayment(
            order_id=order_id,
            user_id=user_id,
            amount=amount,
            currency="EUR",
            card_token=await self.card(number),
        )
        await self.send(command)

    async def work(self) -> int:
        """One round of the worker: how many operations it took."""
        return await self.worker.run_once()

    async def claim(self) -> list[Claim]:
        """What a worker takes before it calls the processor: the due operations, leased."""
        lease = self.worker.lease
        return await self.uow.run(claim_operations, SqlPayments(), self.clock(), lease, 10)

    async def settle(self) -> None:
        """Rounds of the worker until nothing is due, moving the clock past every pause."""
        for _ in range(50):
            if not await self.work():
                self.clock.advance(60)
                if not await self.work():
                    return
        raise AssertionError("the worker never ran out of work")

    async def payment(self, order_id: str) -> Payment:
        found = await self.uow.query(lambda connection: SqlPayments().get(connection, order_id))
        assert found is not None, f"no payment for {order_id}"
        return found

    async def events(self, order_id: str | None = None) -> list[CloudEvent]:
        """What payments published, oldest first; of one order, or all."""
        rows = await self.uow.query(_outbox)
        return [event for event in rows if order_id is None or event.subject == order_id]

    async def answers(self, order_id: str) -> list[str]:
        """The types of the events payments answered the order's commands with, in order."""
        return [event.type.split(".")[1] for event in await self.events(order_id)]

    async def ledger(self) -> Ledger:
        return await self.uow.query(application.ledger, SqlPayments())

    async def operations(self, kind: str | None = None) -> list[tuple[str, str, str]]:
        """What the processor has done: (reference, kind, outcome)."""
        rows = await self.uow.query(_operations)
        return [row for row in rows if kind is None or row[1] == kind]


def _outbox(connection: Connection) -> list[CloudEvent]:
    rows = connection.execute(select(outbox.c.payload).order_by(outbox.c.seq)).scalars()
    return [CloudEvent.from_bytes(payload) for payload in rows]


def _operations(connection: Connection) -> list[tuple[str, str, str]]:
    table = processor_operations
    rows = connection.execute(
        select(table.c.reference, table.c.kind, table.c.outcome).order_by(table.c.created_at)
    )
    return [(reference, kind, outcome) for reference, kind, outcome in rows]


def assert_balanced(ledger: Ledger) -> None:
    """Every movement is a debit and a credit of one amount, so the books balance."""
    assert ledger.debits == ledger.credits


def held(ledger: Ledger) -> int:
    """What the ledger shows as held on cards: zero once every payment is settled."""
    held = ledger.balance(Account.CARD_AUTHORIZATIONS)
    assert held == -ledger.balance(Account.CUSTOMER_CARDS)
    return held


@asynccontextmanager
async def bench_on(url: str) -> AsyncIterator[Bench]:
    """A bench over the database at ``url`` (migrated), its connections closed when the block
    ends."""
    uow = UnitOfWork(url, source="payments")
    clock = Clock()
    processor = SimulatedProcessor(uow, hang=2 * PROCESSOR_DEADLINE)
    worker = application.worker(
        uow,
        application.Parts(SqlPayments(), Deadline(processor, PROCESSOR_DEADLINE)),
        lease=timedelta(seconds=5),
        clock=clock,
    )
    wakes: list[str] = []
    parts = application.Parts(
        SqlPayments(), Deadline(processor, PROCESSOR_DEADLINE), lambda: wakes.append("wake")
    )
    bus = InMemoryBus(subscriptions(parts), uow)
    try:
        yield Bench(uow, processor, worker, bus, clock, wakes)
    finally:
        await uow.dispose()


bench = on_migrated(bench_on, "bench")


@dataclass(frozen=True)
class Seeded:
    """An order's payment made through the bench: whose it is, and how far it went."""

    order_id: str
    user: User
    amount: int = 1000
    card: str = APPROVED
    then: tuple[str, ...] = ()  # "capture", "void", "refund", in order


def seed(url: str, *payments: Seeded) -> None:
    """Make these payments in the database at ``url`` (migrated) before an app serves it."""
    commands = {"capture": CapturePayment, "void": VoidPayment, "refund": RefundPayment}

    async def run() -> None:
        async with bench_on(url) as made:
            for payment in payments:
                await made.authorize(
                    payment.order_id, payment.card, amount=payment.amount, user_id=payment.user.id
                )
                await made.settle()
                for step in payment.then:
                    await made.send(commands[step](order_id=payment.order_id))
                    await made.settle()

    asyncio.run(run())
