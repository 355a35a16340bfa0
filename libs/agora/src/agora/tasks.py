"""Background tasks: waking them when there is news, carrying out work that calls out row by row,
and stopping them so that they really stop.

A :class:`Bell` lets a commit wake the loops and streams that would otherwise only look again at
their next poll.

A :class:`Worker` carries out work that must call the outside world (a card processor, a mail
server) and must never hold a transaction open while it waits. A service gives it three
:class:`Steps`: *claim* due rows, each with a lease, in one transaction (a conditional update, so
two replicas never take the same row); *call* out for each, outside any transaction; *record* the
outcome in another transaction, which the outcomes ready at the same time share (ADR 59). A process
that dies between the call and the record loses the lease, and the row is claimed and called again:
the service makes its calls safe to repeat. With a :class:`Wakeup` for bell, a transaction that
leaves work may lease it itself and *hand* it to the running loop once committed, which then calls
out with no claim transaction of its own.

On Python 3.11, ``asyncio.wait_for`` can lose a cancellation that arrives just as the future it
waits on completes (CPython gh-86296, fixed in 3.12): the coroutine carries on as if it had never
been cancelled, and a loop written ``while True`` then runs for ever. nats-py waits that way in
its fetches and requests, so a consumer's task could ignore the one ``cancel()`` of a shutdown,
and the shutdown then hung on it. :func:`cancel_and_wait` cancels again until each task is done.
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import structlog

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from agora.transactions import Transactions

log = structlog.get_logger("agora.tasks")


class Bell:
    """Rung after a commit that may interest the loops waiting on it (the unit of work's
    after-commit hook calls it); a waiter wakes at once rather than at its next poll. A ring
    while nobody waits is kept for the next wait.

    A ring also asks for a poll (:meth:`take_poll`), as a wait that timed out does; a
    :meth:`nudge` only wakes the waiter (there is room for more work, say)."""

    def __init__(self) -> None:
        self._rung: asyncio.Event | None = None
        self._poll = True

    def start(self) -> None:
        """Begin, in the running event loop (an app may be started more than once, in another
        loop each time)."""
        self._rung = asyncio.Event()
        self._poll = True

    def ring(self) -> None:
        self._poll = True
        self.nudge()

    def __call__(self) -> None:
        self.ring()

    def nudge(self) -> None:
        """Wake the waiter without asking it to poll."""
        if self._rung is not None:
            self._rung.set()

    def take_poll(self) -> bool:
        """Whether a poll was asked for since the last one (and clears the request)."""
        poll, self._poll = self._poll, False
        return poll

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 (a poll interval)
        """Until rung or nudged, or ``timeout`` seconds (then a poll is due)."""
        if self._rung is None:
            self._rung = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                await self._rung.wait()
        except TimeoutError:
            self._poll = True
        self._rung.clear()


C = TypeVar("C", bound="Leased")
R = TypeVar("R")  # what a call came to
K = TypeVar("K")  # a claimed row's key


class Wakeup(Bell, Generic[C]):
    """A :class:`Bell` that also carries claims to a running :class:`Worker`.

    While the worker's loop runs, ``lease`` is how long it leases what it claims: a transaction
    that leaves work may then lease that work itself, with the same conditional update a claim
    makes, and :meth:`hand` the claim over once committed; the loop calls out for it with no
    claim transaction of its own. Otherwise ``lease`` is None and the transaction rings instead.
    A claim handed to a loop that stopped, or to a process that died, is claimed again by a poll
    once its lease runs out.
    """

    def __init__(self) -> None:
        super().__init__()
        self._handed: deque[tuple[C, contextvars.Context]] = deque()
        self.lease: timedelta | None = None

    def start(self, lease: timedelta | None = None) -> None:
        """Begin, in the running event loop; with ``lease``, transactions hand their work over."""
        super().start()
        self._handed.clear()
        self.lease = lease

    def stop(self) -> None:
        self.lease = None
        self._handed.clear()

    def hand(self, claim: C) -> None:
        # With the context of the transaction that left it, so the call and what its outcome
        # records stay in that request's trace and carry its request id.
        self._handed.append((claim, contextvars.copy_context()))
        self.nudge()

    def handed(self) -> list[tuple[C, contextvars.Context]]:
        """The claims handed over since the last call, each with its transaction's context."""
        claims = list(self._handed)
        self._handed.clear()
        return claims


class Leased(Protocol):
    """A claim: ``until`` is when its lease runs out (None: it does not)."""

    @property
    def until(self) -> datetime | None: ...


class Steps(Protocol[C, R]):
    """What a service tells a :class:`Worker`: how to claim, call and record, and the unit of
    work its outcomes are recorded with."""

    @property
    def uow(self) -> Transactions: ...

    async def claim(self, now: datetime, lease: timedelta, limit: int) -> list[C]:
        """Up to ``limit`` due rows, each leased until ``now + lease``, in one transaction;
        rows another worker claimed meanwhile are left to it."""

    async def call(self, claim: C) -> R:
        """Call out for ``claim``, outside any transaction and under a deadline; what happened,
        failures included (an exception leaves the claim to be claimed again)."""

    def record(self, connection: Connection, claim: C, outcome: R, now: datetime) -> None:
        """Write ``outcome`` in the transaction of ``connection`` (unless another worker holds the
        row now), which may record other claims' outcomes before and after it. It runs in the
        context the claim was called in; what it asks to run after the commit
        (:func:`agora.transactions.on_commit`) runs in that context too."""

    def describe(self, claim: C) -> dict[str, object]:
        """What a log line says of ``claim`` (its row's id, say; never a secret)."""


class Leasable(Protocol[K]):
    """A repository of rows a :class:`Worker` claims: those due, and a lease on one of them
    (:func:`agora.sql.take_lease`), in the claiming transaction's connection."""

    def due(self, connection: Connection, now: datetime, limit: int) -> Iterable[K]: ...

    def claim(
        self, connection: Connection, key: K, token: str, until: datetime, now: datetime
    ) -> bool: ...


def leased(
    connection: Connection, rows: Leasable[K], now: datetime, until: datetime, limit: int
) -> Iterator[tuple[K, str]]:
    """Up to ``limit`` keys of ``rows`` due at ``now``, each leased until ``until`` under a
    fresh token, with that token; a row another worker took meanwhile is left out. The loop of
    a :meth:`Steps.claim`, in its transaction."""
    for key in rows.due(connection, now, limit):
        token = uuid.uuid4().hex
        if rows.claim(connection, key, token, until, now):
            yield key, token


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _Answered(Generic[C, R]):
    """A claim's outcome waiting to be recorded: when it came, the context its call ran in, and
    the future its :meth:`Worker.complete` waits on."""

    claim: C
    outcome: R
    now: datetime
    context: contextvars.Context
    recorded: asyncio.Future[None]


def record_each(
    connection: Connection, steps: Steps[C, R], answered: Sequence[_Answered[C, R]]
) -> None:
    """Record each outcome in turn, in the caller's transaction, each in the context its call
    ran in, its events written as its record returns (so they carry that call's trace)."""
    # Here, not at the top: the broker client imports this module, and so does `agora up`'s
    # runner, which has no database and need not load SQLAlchemy (12 MB) for it.
    from agora.transactions import write_pending

    def record_one(one: _Answered[C, R]) -> None:
        steps.record(connection, one.claim, one.outcome, one.now)
        write_pending(connection)

    for one in answered:
        one.context.run(record_one, one)


class Worker(Generic[C, R]):
    """Carries out what ``steps`` claim, outside any transaction.

    ``run`` is the service's background loop: it keeps up to ``batch`` claims being called at
    once, and claims more as soon as one is done, the bell rings, or ``poll`` seconds have passed.
    ``run_once`` is one round of it, awaited to the end (for tests).

    Outcomes are recorded by a task of their own, in one transaction for all those that are ready
    when it starts one (group commit, ADR 59): a transaction each cost about a quarter of
    payments' CPU under load. Should that transaction fail, each outcome is recorded alone, so one
    bad outcome keeps no other from its record.
    """

    def __init__(
        self,
        steps: Steps[C, R],
        *,
        lease: timedelta,
        poll: float = 1.0,
        batch: int = 20,
        wakeup: Bell | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.steps = steps
        self.lease = lease
        self.poll = poll
        self.batch = batch
        self.wakeup = wakeup or Bell()
        self.clock = clock or _now
        self._answered: list[_Answered[C, R]] = []
        self._recorder: asyncio.Task[None] | None = None

    async def run(self) -> None:
        self._answered, self._recorder = [], None  # from another run, in another loop
        wakeup = self.wakeup
        handoff = wakeup if isinstance(wakeup, Wakeup) else None
        if handoff is not None:
            handoff.start(self.lease)
        else:
            wakeup.start()
        running: set[asyncio.Task[None]] = set()

        def launch(claim: C, context: contextvars.Context | None = None) -> None:
            task = asyncio.create_task(self.complete(claim), context=context)
            running.add(task)
            task.add_done_callback(done)

        def done(task: asyncio.Task[None]) -> None:
            running.discard(task)
            wakeup.nudge()  # room for another claim

        try:
            while True:
                # Handed claims are leased already: each is started at once.
                for claim, context in handoff.handed() if handoff is not None else ():
                    launch(claim, context)
                room = self.batch - len(running)
                if room > 0 and wakeup.take_poll():
                    claims = await self.steps.claim(self.clock(), self.lease, room)
                    for claim in claims:
                        launch(claim)
                    if len(claims) == room:
                        wakeup.ring()  # more may be due than there was room for
                await wakeup.wait(self.poll)
        finally:
            if handoff is not None:
                handoff.stop()
            # What is cut short is claimed again once its lease runs out.
            await cancel_and_wait(running)
            if self._recorder is not None:
                await cancel_and_wait([self._recorder])

    async def run_once(self) -> int:
        """Claim what is due, call out for each concurrently, record the outcomes; how many
        rows were claimed."""
        claims = await self.steps.claim(self.clock(), self.lease, self.batch)
        await asyncio.gather(*(self.complete(claim) for claim in claims))
        return len(claims)

    async def complete(self, claim: C) -> None:
        """Call out for one claim and record the outcome; an error is logged, and the claim
        claimed again once its lease runs out."""
        try:
            if claim.until is not None and self.clock() >= claim.until:
                # Its lease ran out before the call could start: a poll claims it again.
                log.info("claim left to a poll", **self.steps.describe(claim))
                return
            outcome = await self.steps.call(claim)
            await self._record(claim, outcome)
        except Exception:
            log.exception("claim not completed", **self.steps.describe(claim))

    async def _record(self, claim: C, outcome: R) -> None:
        """Record ``outcome`` with those ready at the same time; its own error, if it failed."""
        recorded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        answer = _Answered(claim, outcome, self.clock(), contextvars.copy_context(), recorded)
        self._answered.append(answer)
        if self._recorder is None or self._recorder.done():
            # In a context of its own: the transaction belongs to no one claim's trace.
            self._recorder = asyncio.create_task(
                self._record_answered(), context=contextvars.Context()
            )
        await recorded

    async def _record_answered(self) -> None:
        group: list[_Answered[C, R]] = []
        try:
            while self._answered:
                group, self._answered = self._answered, []
                await self._record_group(group)
        finally:
            # Stopped mid-way: whoever waits for these is told, rather than left waiting.
            for one in [*group, *self._answered]:
                if not one.recorded.done():
                    one.recorded.cancel()

    async def _record_group(self, group: list[_Answered[C, R]]) -> None:
        try:
            await self.steps.uow.run(record_each, self.steps, group)
        except Exception as error:
            if len(group) == 1:
                if not group[0].recorded.done():
                    group[0].recorded.set_exception(error)
                return
            for one in group:
                await self._record_group([one])
            return
        for one in group:
            if not one.recorded.done():
                one.recorded.set_result(None)


# Seconds between two cancellations of a task that is still running.
RECANCEL_EVERY = 0.5


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and return once every one of them has ended (their errors are dropped:
    they are being stopped)."""
    pending = {task for task in tasks if not task.done()}
    rounds = 0
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_EVERY)
        rounds += 1
        if pending and rounds == 1:
            log.info(
                "a task went on after it was cancelled, cancelling it again",
                tasks=sorted(task.get_name() for task in pending),
            )
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved, so that asyncio does not report it as never retrieved
