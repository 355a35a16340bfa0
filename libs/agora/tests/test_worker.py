"""The chassis's worker: claim in one step, call outside it, record in another; woken by a bell,
or handed what a transaction leased itself while the loop runs. Outcomes ready together are
recorded in one transaction, and one that cannot be recorded keeps no other from its record."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Column, Connection, MetaData, String, Table, insert, select

from agora.db import UnitOfWork, on_commit
from agora.tasks import Bell, Wakeup, Worker
from agora_tools.pytest_plugin import Clock
from agora_tools.testing import commits_of, unit_of_work_with

LEASE = timedelta(seconds=5)
WAIT = 30.0  # seconds a step may take on a busy machine (a bound, not a measurement)
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

metadata = MetaData()
recorded = Table(
    "recorded",
    metadata,
    Column("row", String, primary_key=True),
    Column("outcome", String, nullable=False),
    Column("request_id", String, nullable=False),
)


@dataclass(frozen=True)
class Claim:
    row: str
    until: datetime | None


@dataclass
class Rows:
    """Steps over rows in memory, whose outcomes are recorded in a table of a real database:
    ``due`` waits to be claimed; what is called is kept, with the request id each call ran
    under, and so is what ran after each record's commit. A row in ``unrecordable`` is written
    and then fails its record, so only a rollback keeps it out of the table."""

    uow: UnitOfWork
    due: list[str] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)
    unrecordable: set[str] = field(default_factory=set)
    called: list[tuple[str, str]] = field(default_factory=list)
    committed: list[tuple[str, str]] = field(default_factory=list)
    claims: int = 0

    async def claim(self, now: datetime, lease: timedelta, limit: int) -> list[Claim]:
        self.claims += 1
        taken, self.due = self.due[:limit], self.due[limit:]
        return [Claim(row, now + lease) for row in taken]

    async def call(self, claim: Claim) -> str:
        self.called.append((claim.row, request_id.get()))
        if claim.row in self.failing:
            raise RuntimeError("the far side broke")
        return f"done {claim.row}"

    def record(self, connection: Connection, claim: Claim, outcome: str, now: datetime) -> None:
        connection.execute(
            insert(recorded).values(row=claim.row, outcome=outcome, request_id=request_id.get())
        )
        if claim.row in self.unrecordable:
            raise ValueError(f"{claim.row} cannot be recorded")
        row, caller = claim.row, request_id.get()
        on_commit(connection, lambda: self.committed.append((row, caller)))

    def describe(self, claim: Claim) -> dict[str, object]:
        return {"row": claim.row}

    async def recorded(self) -> list[tuple[str, str]]:
        """What the table holds, by row: each row's outcome."""
        statement = select(recorded.c.row, recorded.c.outcome).order_by(recorded.c.row)
        rows = await self.uow.query(lambda connection: connection.execute(statement).all())
        return [(row, outcome) for row, outcome in rows]

    async def recorded_under(self) -> dict[str, str]:
        """The request id each row's record ran under."""
        statement = select(recorded.c.row, recorded.c.request_id)
        rows = await self.uow.query(lambda connection: connection.execute(statement).all())
        return {row: caller for row, caller in rows}


@pytest.fixture
async def uow(database_url: str) -> AsyncIterator[UnitOfWork]:
    """A unit of work on a database of the test's own, on each store."""
    async with unit_of_work_with(database_url, metadata) as uow:
        yield uow


@pytest.fixture
def rows(uow: UnitOfWork) -> Rows:
    return Rows(uow)


async def eventually(check: object) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not check():  # type: ignore[operator]  # a callable of the test's
        assert asyncio.get_running_loop().time() < deadline, "never happened"
        await asyncio.sleep(0.01)


async def test_a_round_claims_what_is_due_calls_out_for_each_and_records_the_outcomes(
    rows: Rows,
) -> None:
    rows.due = ["a", "b", "c"]
    worker = Worker(rows, lease=LEASE, batch=2)

    assert await worker.run_once() == 2
    assert await worker.run_once() == 1

    assert await rows.recorded() == [("a", "done a"), ("b", "done b"), ("c", "done c")]


async def test_a_failed_call_records_nothing_and_the_others_go_on(rows: Rows) -> None:
    rows.due, rows.failing = ["a", "b"], {"a"}

    assert await Worker(rows, lease=LEASE).run_once() == 2

    assert await rows.recorded() == [("b", "done b")]


async def test_a_claim_whose_lease_ran_out_before_its_call_is_left_to_a_poll(rows: Rows) -> None:
    clock = Clock(datetime(2026, 1, 1, tzinfo=UTC))
    worker = Worker(rows, lease=LEASE, clock=clock)

    await worker.complete(Claim("late", clock() - timedelta(seconds=1)))

    assert rows.called == []
    assert await rows.recorded() == []


async def test_the_loop_claims_when_the_bell_rings_and_not_before(rows: Rows) -> None:
    bell = Bell()
    worker = Worker(rows, lease=LEASE, poll=3600.0, wakeup=bell)
    loop = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: rows.claims == 1)  # its first poll found nothing
        rows.due.append("a")
        await asyncio.sleep(0.05)
        assert await rows.recorded() == []
        bell.ring()
        await eventually(lambda: [row for row, _ in rows.committed] == ["a"])
        assert await rows.recorded() == [("a", "done a")]
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_a_full_round_claims_again_at_once(rows: Rows) -> None:
    rows.due = [str(n) for n in range(5)]
    worker = Worker(rows, lease=LEASE, poll=3600.0, batch=2)
    loop = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: len(rows.committed) == 5)
        assert await rows.recorded() == [(str(n), f"done {n}") for n in range(5)]
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_while_the_loop_runs_a_handed_claim_is_called_in_its_senders_context(
    rows: Rows,
) -> None:
    wakeup: Wakeup[Claim] = Wakeup()
    worker = Worker(rows, lease=LEASE, poll=3600.0, wakeup=wakeup)
    loop = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: wakeup.lease == LEASE)
        claims = rows.claims
        token = request_id.set("r-1")
        wakeup.hand(Claim("a", datetime.now(UTC) + LEASE))
        request_id.reset(token)
        await eventually(lambda: rows.committed == [("a", "r-1")])
        assert rows.called == [("a", "r-1")]
        # Recorded, and what its record left for after the commit run, in that context too.
        assert await rows.recorded() == [("a", "done a")]
        assert await rows.recorded_under() == {"a": "r-1"}
        assert rows.claims == claims  # no claim step of its own
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
    assert wakeup.lease is None  # stopped: nothing is handed over any more


async def test_without_a_running_loop_nothing_is_leased_and_a_ring_asks_for_a_poll() -> None:
    wakeup: Wakeup[Claim] = Wakeup()

    assert wakeup.lease is None
    assert wakeup.take_poll()  # the first round always polls
    assert not wakeup.take_poll()
    wakeup.ring()
    assert wakeup.take_poll()
    wakeup.nudge()
    assert not wakeup.take_poll()
    assert wakeup.handed() == []


async def test_outcomes_ready_together_are_recorded_in_one_transaction(
    rows: Rows, database_url: str
) -> None:
    rows.due = [str(n) for n in range(8)]

    with commits_of(database_url) as commits:
        assert await Worker(rows, lease=LEASE, batch=8).run_once() == 8

    assert await rows.recorded() == [(str(n), f"done {n}") for n in range(8)]
    assert sorted(rows.committed) == [(str(n), "-") for n in range(8)]
    assert len(commits) == 1


async def test_each_record_runs_in_its_own_calls_context(rows: Rows, database_url: str) -> None:
    worker = Worker(rows, lease=LEASE)
    until = datetime.now(UTC) + LEASE

    async def completed_under(row: str) -> None:
        request_id.set(f"r-{row}")
        await worker.complete(Claim(row, until))

    with commits_of(database_url) as commits:
        await asyncio.gather(*(completed_under(row) for row in "abc"))

    assert len(commits) == 1  # one transaction, three contexts
    assert await rows.recorded_under() == {"a": "r-a", "b": "r-b", "c": "r-c"}
    assert sorted(rows.committed) == [("a", "r-a"), ("b", "r-b"), ("c", "r-c")]


async def test_an_outcome_that_cannot_be_recorded_keeps_no_other_from_its_record(
    rows: Rows,
) -> None:
    rows.due, rows.unrecordable = ["a", "b", "c", "d"], {"b"}

    assert await Worker(rows, lease=LEASE).run_once() == 4

    # b's row was written before its record failed: rolled back, in the group and alone; the
    # others recorded once each (the table's key would refuse a second).
    assert await rows.recorded() == [("a", "done a"), ("c", "done c"), ("d", "done d")]
    assert sorted(rows.committed) == [("a", "-"), ("c", "-"), ("d", "-")]
