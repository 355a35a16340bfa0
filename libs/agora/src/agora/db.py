"""The database unit of work.

Handlers are plain functions over the SQLAlchemy Core ``Connection`` of their transaction (ADR 63;
as in *Architecture Patterns with Python*, without its ORM session, which no handler needs: they
execute statements on tables): they read, change, and return; they never call another service.
The unit of work runs one of them in one transaction, and commits only if it returns.

How it runs depends on the store, because the costs differ by an order of magnitude:

* SQLite runs the handler inline in the event loop. A transaction of a few statements takes well
  under a millisecond, cheaper than any hop to a thread; and since nothing awaits inside it, one
  process never has two SQLite transactions open at once. Writes start with ``BEGIN IMMEDIATE`` and
  a zero busy timeout: when another process (a second replica) holds the write lock, the unit of
  work *awaits* a short, jittered pause (:mod:`agora.backoff`) and tries again, so a busy database
  never blocks the loop.
* PostgreSQL runs the same handler through ``AsyncConnection.run_sync`` over asyncpg, and retries
  the whole transaction on a serialization failure or a deadlock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

import structlog
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from agora.backoff import Backoff, retrying
from agora.errors import ServiceUnavailable
from agora.secrets import OWNER_ONLY_DIR, OWNER_ONLY_FILE
from agora.telemetry import trace_statements as trace_engine
from agora.transactions import SOURCE, Callback, Handler, finish, forget
from agora.transactions import on_commit as on_commit  # services import the hook from here

if TYPE_CHECKING:
    # Imported where a PostgreSQL store is opened: it loads SQLAlchemy's ORM (8 MB), which the
    # embedded profile's processes never need.
    from sqlalchemy.ext.asyncio import AsyncEngine

P = ParamSpec("P")
T = TypeVar("T")
# What a transaction gives back: the handler's result, how many events it wrote, and what to call
# once it has committed.
Outcome = tuple[T, int, list[Callback]]

log = structlog.get_logger("agora.db")


# SQLSTATEs after which PostgreSQL asks the client to run the transaction again.
_PG_RETRYABLE = {"40001", "40P01"}


class DatabaseBusy(ServiceUnavailable):
    title = "Database busy"


@overload
def aware(moment: datetime) -> datetime: ...
@overload
def aware(moment: None) -> None: ...
def aware(moment: datetime | None) -> datetime | None:
    """A moment read back from the database, in UTC: SQLite keeps no time zone, and every moment
    a service stores is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if (
        parsed.get_backend_name() != "sqlite"
        or not parsed.database
        or parsed.database == ":memory:"
    ):
        return None
    return Path(parsed.database)


def private_sqlite_file(path: Path) -> None:
    """Make the SQLite database ``path`` readable by its owner only, before SQLite opens it.

    SQLite gives a database's -wal and -shm files the mode of the database file, so creating it
    0600 here keeps all three private. A database an older version left readable by others is
    narrowed; a missing folder is made owner-only (an existing one is the operator's choice).
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=OWNER_ONLY_DIR)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, OWNER_ONLY_FILE))
    for file in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")):
        try:
            status = file.stat()
        except FileNotFoundError:
            continue
        # Another user's file is not ours to change (and chmod would be refused).
        if status.st_mode & 0o077 and status.st_uid == os.getuid():
            file.chmod(OWNER_ONLY_FILE)


def async_url(url: str) -> str:
    """``postgresql://`` means asyncpg here: the one PostgreSQL driver of the chassis."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


class UnitOfWork:
    """Runs handlers in transactions against one service's database."""

    def __init__(
        self,
        url: str,
        *,
        source: str = "agora",
        synchronous: str = "NORMAL",
        busy_deadline: float = 10.0,
        pool_size: int = 10,
        trace_statements: bool = False,
    ) -> None:
        self.url = url
        # The service whose events this unit of work records (the CloudEvents `source`).
        self.source = source
        self._after_commit: list[Callable[[], None]] = []
        self.busy_deadline = busy_deadline
        # Short jittered pauses, awaited so the loop keeps serving meanwhile, for at most
        # busy_deadline seconds.
        self._busy = Backoff(initial=0.001, max=0.05, jitter=0.001, timeout=busy_deadline)
        self.is_sqlite = make_url(url).get_backend_name() == "sqlite"
        self._sync: Engine | None = None
        self._async: AsyncEngine | None = None
        if self.is_sqlite:
            path = sqlite_path(url)
            if path is not None:
                private_sqlite_file(path)
            self._sync = engine = _sqlite_engine(url, synchronous)
        else:
            from sqlalchemy.ext.asyncio import create_async_engine

            self._async = create_async_engine(
                async_url(url), pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
            )
            engine = self._async.sync_engine
        if trace_statements:
            # Each statement a span under the request's or message's: asked for, as it costs
            # 50-95 µs of CPU a statement (ADR 41).
            trace_engine(engine)

    def after_commit(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` after each commit that wrote events (the relay wakes on it: the
        outbox's writer, asked for by ``agora.messaging.record``, counts them). Returns what
        stops those calls."""
        self._after_commit.append(callback)
        return lambda: self._after_commit.remove(callback)

    @property
    def backend(self) -> str:
        return "sqlite" if self.is_sqlite else "postgresql"

    async def run(self, handler: Handler[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``handler(connection, ...)`` in a write transaction; commit if it returns."""
        return await self._execute(handler, True, *args, **kwargs)

    async def query(self, handler: Handler[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a read-only ``handler(connection, ...)``; nothing it does is committed."""
        return await self._execute(handler, False, *args, **kwargs)

    async def ping(self) -> None:
        await self.query(lambda connection: connection.execute(text("SELECT 1")).scalar_one())

    async def dispose(self) -> None:
        if self._sync is not None:
            self._sync.dispose()
        if self._async is not None:
            await self._async.dispose()

    async def _execute(
        self, handler: Callable[..., T], write: bool, *args: Any, **kwargs: Any
    ) -> T:
        started = time.monotonic()
        tries = 0

        def transaction(connection: Connection) -> Outcome[T]:
            return _in_transaction(connection, self.source, write, handler, *args, **kwargs)

        async def attempt() -> Outcome[T]:
            if self._sync is not None:
                return _on_sqlite(self._sync, write, transaction)
            return await self._on_postgres(write, transaction)

        def busy(_: Exception, failed: int, _pause: float) -> None:
            nonlocal tries
            tries = failed

        try:
            result, events, committed = await retrying(
                attempt, self._busy, on=self._retryable, failed=busy
            )
        except DBAPIError as error:
            if not self._retryable(error):
                raise
            waited = time.monotonic() - started
            log.warning("database stayed busy", waited_s=round(waited, 3), attempts=tries)
            raise DatabaseBusy(f"the database stayed busy for {waited:.1f} s") from error
        for callback in committed:
            callback()
        if events:
            for callback in self._after_commit:
                callback()
        return result

    async def _on_postgres(
        self, write: bool, transaction: Callable[[Connection], Outcome[T]]
    ) -> Outcome[T]:
        assert self._async is not None
        async with self._async.connect() as connection:
            try:
                outcome = await connection.run_sync(transaction)
                if write:
                    await connection.commit()
                return outcome
            finally:
                await connection.rollback()

    def _retryable(self, error: Exception) -> bool:
        if not isinstance(error, DBAPIError):
            return False
        if self.is_sqlite:
            message = str(error.orig).lower()
            return "database is locked" in message or "database is busy" in message
        code = getattr(error.orig, "sqlstate", None) or getattr(
            getattr(error.orig, "__cause__", None), "sqlstate", None
        )
        return code in _PG_RETRYABLE


def _in_transaction(
    connection: Connection,
    source: str,
    write: bool,
    handler: Callable[..., T],
    /,
    *args: Any,
    **kwargs: Any,
) -> Outcome[T]:
    """Run the handler in the transaction ``connection`` has begun; for a write, then what it
    asked to be written before the commit (the events it recorded). How many events were written,
    and what it asked to be called after the commit, come back with the result. The caller
    commits. Whatever the transaction left in the connection's ``info`` is forgotten as it ends,
    a read's too (what it asked for at a commit that never comes)."""
    try:
        if not write:
            return handler(connection, *args, **kwargs), 0, []
        connection.info[SOURCE] = source
        result = handler(connection, *args, **kwargs)
        events, committed = finish(connection)
        return result, events, committed
    finally:
        forget(connection)


# How a SQLite transaction begins where the unit of work starts one: IMMEDIATE for its writes
# (the write lock at once, so that a busy database fails here, where it is retried, and never
# half-way through a handler), DEFERRED for everything else.
_SQLITE_BEGIN: ContextVar[str] = ContextVar("agora_sqlite_begin", default="DEFERRED")


def _on_sqlite(
    bind: Engine, write: bool, transaction: Callable[[Connection], Outcome[T]]
) -> Outcome[T]:
    # A read begins as every transaction does by default (DEFERRED): nothing to set.
    begins = _SQLITE_BEGIN.set("IMMEDIATE") if write else None
    try:
        with bind.connect() as connection:
            try:
                outcome = transaction(connection)
                if write:
                    connection.commit()
                return outcome
            finally:
                connection.rollback()
    finally:
        if begins is not None:
            _SQLITE_BEGIN.reset(begins)


def _sqlite_engine(url: str, synchronous: str) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Never wait inside SQLite: a locked database is retried by awaiting, not by blocking.
        cursor.execute("PRAGMA busy_timeout=0")
        cursor.close()

    def _begin(dbapi_connection: Any) -> None:
        # Straight to the driver, as PostgreSQL's begins its transactions itself: no span of
        # its own (ADR 41), and not a statement's way through SQLAlchemy, which cost a twentieth
        # of a consumer's message. SQLAlchemy wraps its error as a statement's, so that a
        # database another process holds is retried as a busy one (DBAPIError). The dialect's
        # own hook rather than a "begin" event (ADR 61): one engine event listener makes every
        # connection dispatch events around each of its statements, which cost a quarter of a
        # one-row read.
        dbapi_connection.driver_connection.execute(f"BEGIN {_SQLITE_BEGIN.get()}")

    # pysqlite's dialect begins nothing (the driver would begin only before a write, so a read
    # would see no snapshot); this engine's dialect is its own, made by create_engine.
    engine.dialect.do_begin = _begin  # type: ignore[method-assign]  # this engine's own dialect
    return engine
