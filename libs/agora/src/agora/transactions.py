"""What a handler's transaction and the code around it agree on, apart from any store or broker.

:mod:`agora.db` runs handlers in transactions; :mod:`agora.messaging` records events in them and
runs its relay and consumers through them. Neither imports the other (an import contract keeps
it so, ADR 36): both import this module.

* :class:`Transactions` is what runs handlers: the unit of work, seen from the messaging side.
* A handler's session carries what is to happen at its commit: :func:`before_commit` adds a
  writer that runs at the end of the handler, inside its transaction (the outbox is written so);
  :func:`on_commit` a callback that runs once the transaction has committed.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from sqlalchemy import Connection
from sqlalchemy.orm import Session

P = ParamSpec("P")
T = TypeVar("T")
Handler = Callable[Concatenate[Session, P], T]
# A read-only handler on a Core connection (UnitOfWork.read), and what a repository's read method
# is given when it serves both such a handler and one in a session (it executes statements only).
Reader = Callable[Concatenate[Connection, P], T]
Reads = Session | Connection

Callback = Callable[[], None]
# Writes rows in the handler's transaction; how many events it wrote.
Writer = Callable[[Session], int]

SOURCE = "agora.source"
BEFORE_COMMIT = "agora.before_commit"
ON_COMMIT = "agora.on_commit"
WRITTEN = "agora.events_written"


class Transactions(Protocol):
    """Runs handlers in transactions against one service's database."""

    @property
    def source(self) -> str:
        """The service whose database it is (the CloudEvents ``source`` of its events)."""
        ...

    async def run(self, handler: Handler[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``handler(session, ...)`` in a write transaction; commit if it returns."""
        ...

    async def query(self, handler: Handler[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a read-only ``handler(session, ...)``; nothing it does is committed."""
        ...

    async def read(self, handler: Reader[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a read-only ``handler(connection, ...)`` on a Core connection, with no ORM
        session around it; nothing it does is committed."""
        ...


def source_of(session: Session) -> str:
    """The service whose transaction ``session`` is in."""
    return str(session.info.get(SOURCE, "agora"))


def before_commit(session: Session, writer: Writer) -> None:
    """Call ``writer(session)`` once the handler has returned, in its transaction, so that what
    it writes commits with the handler's change or not at all; asked again, once all the same.
    When a writer wrote events, the unit of work tells those who wait for them after the
    commit."""
    writers: list[Writer] = session.info.setdefault(BEFORE_COMMIT, [])
    if writer not in writers:
        writers.append(writer)


def on_commit(session: Session, callback: Callback) -> None:
    """Call ``callback`` once this handler's transaction has committed; never if it rolls back
    (a retried attempt's callbacks go with it). For what must happen only after the change is
    durable, such as handing the committed work to a worker of this process.

    It runs in the context it was asked for in: the span of the request or message the handler
    served is current in it, even when one transaction served several messages (ADR 58)."""
    session.info.setdefault(ON_COMMIT, []).append(
        functools.partial(contextvars.copy_context().run, callback)
    )


def write_pending(session: Session) -> None:
    """Run the writers asked for so far, now, in the transaction; what they wrote is counted for
    :func:`finish`. For a handler that runs several others in one transaction (a consumer's
    batch): each one's events are written while its own span is current, as if it ran alone."""
    writers: list[Writer] = session.info.pop(BEFORE_COMMIT, [])
    if writers:
        written = sum(write(session) for write in writers)
        session.info[WRITTEN] = session.info.get(WRITTEN, 0) + written


def finish(session: Session) -> tuple[int, list[Callback]]:
    """Run the writers the handler asked for; how many events were written in the transaction,
    and the callbacks for after the commit. The unit of work calls it when the handler has
    returned."""
    write_pending(session)
    return session.info.pop(WRITTEN, 0), session.info.pop(ON_COMMIT, [])
