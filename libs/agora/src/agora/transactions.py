"""What a handler's transaction and the code around it agree on, apart from any store or broker.

:mod:`agora.db` runs handlers in transactions; :mod:`agora.messaging` records events in them and
runs its relay and consumers through them. Neither imports the other (an import contract keeps
it so, ADR 36): both import this module.

* :class:`Transactions` is what runs handlers: the unit of work, seen from the messaging side.
* A handler's connection carries what is to happen at its commit: :func:`before_commit` adds a
  writer that runs at the end of the handler, inside its transaction (the outbox is written so);
  :func:`on_commit` a callback that runs once the transaction has committed. They, and whatever
  else a transaction keeps there (the outbox's recorded events), are kept in the connection's
  ``info``, which outlives the transaction (it belongs to the pooled connection): the unit of work
  empties it with :func:`forget` when the transaction ends.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from sqlalchemy import Connection

P = ParamSpec("P")
T = TypeVar("T")
# A handler: a plain function over the Core connection of its transaction (ADR 63).
Handler = Callable[Concatenate[Connection, P], T]

Callback = Callable[[], None]
# Writes rows in the handler's transaction; how many events it wrote.
Writer = Callable[[Connection], int]

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
        """Run ``handler(connection, ...)`` in a write transaction; commit if it returns."""
        ...

    async def query(self, handler: Handler[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a read-only ``handler(connection, ...)``; nothing it does is committed."""
        ...


def source_of(connection: Connection) -> str:
    """The service whose transaction ``connection`` is in."""
    return str(connection.info.get(SOURCE, "agora"))


def before_commit(connection: Connection, writer: Writer) -> None:
    """Call ``writer(connection)`` once the handler has returned, in its transaction, so that what
    it writes commits with the handler's change or not at all; asked again, once all the same.
    When a writer wrote events, the unit of work tells those who wait for them after the
    commit."""
    writers: list[Writer] = connection.info.setdefault(BEFORE_COMMIT, [])
    if writer not in writers:
        writers.append(writer)


def on_commit(connection: Connection, callback: Callback) -> None:
    """Call ``callback`` once this handler's transaction has committed; never if it rolls back
    (a retried attempt's callbacks go with it). For what must happen only after the change is
    durable, such as handing the committed work to a worker of this process.

    It runs in the context it was asked for in: the span of the request or message the handler
    served is current in it, even when one transaction served several messages (ADR 58)."""
    connection.info.setdefault(ON_COMMIT, []).append(
        functools.partial(contextvars.copy_context().run, callback)
    )


def write_pending(connection: Connection) -> None:
    """Run the writers asked for so far, now, in the transaction; what they wrote is counted for
    :func:`finish`. For a handler that runs several others in one transaction (a consumer's
    batch): each one's events are written while its own span is current, as if it ran alone."""
    writers: list[Writer] = connection.info.pop(BEFORE_COMMIT, [])
    if writers:
        written = sum(write(connection) for write in writers)
        connection.info[WRITTEN] = connection.info.get(WRITTEN, 0) + written


def finish(connection: Connection) -> tuple[int, list[Callback]]:
    """Run the writers the handler asked for; how many events were written in the transaction,
    and the callbacks for after the commit. The unit of work calls it when the handler has
    returned."""
    write_pending(connection)
    return connection.info.pop(WRITTEN, 0), connection.info.pop(ON_COMMIT, [])


def forget(connection: Connection) -> None:
    """Empty ``connection.info`` of what a transaction left there (its source, and the writers,
    recorded events and callbacks of one that rolled back), before the pool hands the connection
    to another. All of it: ``info`` holds one transaction's state and nothing else, so no module
    that keeps something there has to be named here."""
    connection.info.clear()
