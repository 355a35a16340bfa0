"""The chassis's worker: claim in one step, call outside it, record in another; woken by a bell,
or handed what a transaction leased itself while the loop runs."""

from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from agora.tasks import Bell, Wakeup, Worker
from agora_tools.pytest_plugin import Clock

LEASE = timedelta(seconds=5)
WAIT = 30.0  # seconds a step may take on a busy machine (a bound, not a measurement)
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


@dataclass(frozen=True)
class Claim:
    row: str
    until: datetime | None


@dataclass
class Rows:
    """Steps over rows in memory: ``due`` waits to be claimed; what is called and recorded is
    kept, with the request id each call ran under."""

    due: list[str] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)
    called: list[tuple[str, str]] = field(default_factory=list)
    recorded: list[tuple[str, str]] = field(default_factory=list)
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

    async def record(self, claim: Claim, outcome: str, now: datetime) -> None:
        self.recorded.append((claim.row, outcome))

    def describe(self, claim: Claim) -> dict[str, object]:
        return {"row": claim.row}


async def eventually(check: object) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not check():  # type: ignore[operator]  # a callable of the test's
        assert asyncio.get_running_loop().time() < deadline, "never happened"
        await asyncio.sleep(0.01)


async def test_a_round_claims_what_is_due_calls_out_for_each_and_records_the_outcomes() -> None:
    rows = Rows(due=["a", "b", "c"])
    worker = Worker(rows, lease=LEASE, batch=2)

    assert await worker.run_once() == 2
    assert await worker.run_once() == 1

    assert sorted(rows.recorded) == [("a", "done a"), ("b", "done b"), ("c", "done c")]


async def test_a_failed_call_records_nothing_and_the_others_go_on() -> None:
    rows = Rows(due=["a", "b"], failing={"a"})

    assert await Worker(rows, lease=LEASE).run_once() == 2

    assert rows.recorded == [("b", "done b")]


async def test_a_claim_whose_lease_ran_out_before_its_call_is_left_to_a_poll() -> None:
    clock = Clock(datetime(2026, 1, 1, tzinfo=UTC))
    rows = Rows()
    worker = Worker(rows, lease=LEASE, clock=clock)

    await worker.complete(Claim("late", clock() - timedelta(seconds=1)))

    assert rows.called == []
    assert rows.recorded == []


async def test_the_loop_claims_when_the_bell_rings_and_not_before() -> None:
    rows = Rows()
    bell = Bell()
    worker = Worker(rows, lease=LEASE, poll=3600.0, wakeup=bell)
    loop = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: rows.claims == 1)  # its first poll found nothing
        rows.due.append("a")
        await asyncio.sleep(0.05)
        assert rows.recorded == []
        bell.ring()
        await eventually(lambda: rows.recorded == [("a", "done a")])
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_a_full_round_claims_again_at_once() -> None:
    rows = Rows(due=[str(n) for n in range(5)])
    worker = Worker(rows, lease=LEASE, poll=3600.0, batch=2)
    loop = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: len(rows.recorded) == 5)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_while_the_loop_runs_a_handed_claim_is_called_in_its_senders_context() -> None:
    rows = Rows()
    wakeup: Wakeup[Claim] = Wakeup()
    worker = Worker(rows, lease=LEASE, poll=3600.0, wakeup=wakeup)
    loop = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: wakeup.lease == LEASE)
        claims = rows.claims
        token = request_id.set("r-1")
        wakeup.hand(Claim("a", datetime.now(UTC) + LEASE))
        request_id.reset(token)
        await eventually(lambda: rows.recorded == [("a", "done a")])
        assert rows.called == [("a", "r-1")]
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
