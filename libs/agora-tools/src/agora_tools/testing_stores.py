"""The stores tests keep data in, and the shared servers behind them: a SQLite file, a throwaway
PostgreSQL database or a Redis key prefix of the test's own (skipped with a reason on a machine
without the server; failing under CI, which must run every test), and a database read or changed
from a synchronous test. Tests import these helpers from :mod:`agora_tools.testing`."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from agora.messaging.envelope import CloudEvent

if TYPE_CHECKING:
    from sqlalchemy import Connection, MetaData

    from agora.db import UnitOfWork

T = TypeVar("T")

POSTGRES_HOST = os.environ.get("AGORA_TEST_POSTGRES_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("AGORA_TEST_POSTGRES_PORT", "5432"))
POSTGRES_USER = os.environ.get("AGORA_TEST_POSTGRES_USER", "postgres")


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the calling test, saying why; under CI, which must run every test, fail instead."""
    import pytest

    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason}, and CI must run every test", pytrace=False)
    pytest.skip(reason)


def require_server(host: str, port: int, what: str) -> None:
    """Skip the calling test when ``what`` is not running, saying why; under CI, fail instead."""
    if not reachable(host, port):
        skip_or_fail(f"{what} is not reachable on {host}:{port}")


def postgres_url(database: str) -> str:
    return f"postgresql://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/{database}"


async def _admin(statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(
        host=POSTGRES_HOST, port=POSTGRES_PORT, user=POSTGRES_USER, database="postgres"
    )
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextmanager
def postgres_database(label: str) -> Iterator[str]:
    """A fresh database of the test's own on the shared server, dropped afterwards.

    Its name carries a random part, so parallel or repeated runs never collide, and the shared
    server's other databases are never touched.
    """
    require_server(POSTGRES_HOST, POSTGRES_PORT, "PostgreSQL")
    name = f"agora_test_{label}_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield postgres_url(name)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@contextmanager
def redis_prefix(label: str) -> Iterator[str]:
    """A key prefix of the test's own on the shared Redis; its keys are deleted afterwards.

    Only keys under that prefix are touched: the shared server's other keys are never read,
    changed or flushed.
    """
    require_server(REDIS_HOST, REDIS_PORT, "Redis")
    import redis

    prefix = f"agora-test:{label}:{uuid.uuid4().hex[:10]}:"
    try:
        yield prefix
    finally:
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=500))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


# The stores every database test runs on: `@pytest.fixture(params=STORES)`.
STORES = ("sqlite", "postgresql")


@contextmanager
def database(store: str, label: str, directory: Path) -> Iterator[str]:
    """A database of the test's own: a SQLite file in ``directory``, or a fresh PostgreSQL
    database (see :func:`postgres_database`)."""
    if store == "sqlite":
        yield f"sqlite:///{directory / 'data' / f'{label}.db'}"
        return
    if store != "postgresql":
        raise ValueError(f"unknown store {store!r}")
    with postgres_database(label) as url:
        yield url


@asynccontextmanager
async def unit_of_work_with(database_url: str, metadata: MetaData) -> AsyncIterator[UnitOfWork]:
    """A unit of work on the database at ``database_url``, with the tables of ``metadata`` made
    in it, disposed of on the way out: for a test of the chassis with tables of its own."""
    from agora.db import UnitOfWork

    uow = UnitOfWork(database_url)
    try:
        await uow.run(lambda connection: metadata.create_all(connection))
        yield uow
    finally:
        await uow.dispose()


def on_sqlite(data_dir: Path, name: str) -> dict[str, Any]:
    """The settings of a service ``name`` whose database is a SQLite file in ``data_dir``, logging
    only warnings: ``CatalogSettings(**on_sqlite(tmp_path, "catalog"))``."""
    return {
        "database_url": f"sqlite:///{data_dir / f'{name}.db'}",
        "data_dir": data_dir,
        "log_level": "warning",
    }


def read_from(database_url: str, read: Callable[[Connection], T]) -> T:
    """What ``read(connection)`` finds in the database at ``database_url``, read as a unit of work's
    query (nothing it does is committed).

    Call it from a synchronous test (an app under ``TestClient`` keeps a loop of its own): it
    opens its own connection, in an event loop of its own.
    """
    return _with_unit_of_work(database_url, lambda uow: uow.query(read))


def write_to(database_url: str, write: Callable[[Connection], T]) -> T:
    """Run ``write(connection)`` on the database at ``database_url`` in one transaction of a unit
    of work, committed if it returns; what it returns. Call it from a synchronous test, as
    :func:`read_from`."""
    return _with_unit_of_work(database_url, lambda uow: uow.run(write))


def _with_unit_of_work(database_url: str, use: Callable[[UnitOfWork], Awaitable[T]]) -> T:
    from agora.db import UnitOfWork

    async def run() -> T:
        uow = UnitOfWork(database_url)
        try:
            return await use(uow)
        finally:
            await uow.dispose()

    return asyncio.run(run())


def outbox_events(database_url: str) -> list[CloudEvent]:
    """Every event a service's outbox holds, in recording order (for tests of what it publishes).

    Call it from a synchronous test; it opens its own connection to the service's database.
    """
    from sqlalchemy import select

    from agora.messaging.schema import outbox

    def read(connection: Connection) -> list[CloudEvent]:
        rows = connection.execute(select(outbox.c.payload).order_by(outbox.c.seq)).scalars()
        return [CloudEvent.from_bytes(payload) for payload in rows]

    return read_from(database_url, read)


async def schema_drift(database_url: str, metadata: MetaData) -> list[Any]:
    """How a migrated database differs from the tables the service's code is written against
    (``metadata``, plus the chassis's outbox and inbox, which its migrations also make); empty
    when the migrations build exactly that schema."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import MetaData as Schema

    from agora.db import UnitOfWork
    from agora.messaging.schema import metadata as messaging_metadata

    expected = Schema()
    for source in (metadata, messaging_metadata):
        for table in source.tables.values():
            table.to_metadata(expected)

    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection)
        return list(compare_metadata(context, expected))

    uow = UnitOfWork(database_url)
    try:
        return await uow.query(compare)
    finally:
        await uow.dispose()
