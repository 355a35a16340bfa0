"""Alembic migrations per service, applied before the service serves.

Each service keeps its Alembic scripts in its package (``<service>/migrations``), so an installed
service can migrate its own database. :func:`upgrade` holds a lock while it runs, so that replicas
starting together never race: a file lock beside a SQLite database, an advisory lock in
PostgreSQL. Running it again when the database is current does nothing.

A revision states only what is its own: the Alembic environment is :func:`run_env`, and the
revision that adds the chassis's outbox and inbox takes its two steps from here::

    upgrade = create_outbox_and_inbox
    downgrade = drop_outbox_and_inbox
"""

from __future__ import annotations

import asyncio
import fcntl
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog
from alembic import command, context, op
from alembic.config import Config
from sqlalchemy import Connection, MetaData, create_engine, pool, text
from sqlalchemy.engine import make_url

from agora.db import async_url, private_sqlite_file, sqlite_path
from agora.messaging.schema import create_tables, drop_tables

log = structlog.get_logger("agora.migrations")


def upgrade(url: str, script_location: Path, *, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` with the scripts in ``script_location``."""
    config = Config()
    config.set_main_option("script_location", str(script_location))
    if make_url(url).get_backend_name() == "sqlite":
        path = sqlite_path(url)
        if path is not None:
            private_sqlite_file(path)
        with _file_lock(path):
            engine = create_engine(url, poolclass=pool.NullPool)
            try:
                with engine.begin() as connection:
                    connection.exec_driver_sql("PRAGMA journal_mode=WAL")
                    _upgrade(config, connection, revision)
            finally:
                engine.dispose()
    else:
        asyncio.run(_upgrade_postgres(config, url, revision, str(script_location)))


async def _upgrade_postgres(config: Config, url: str, revision: str, key: str) -> None:
    # Here, not at the top: it loads SQLAlchemy's ORM, which a SQLite store never needs (ADR 63).
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(async_url(url), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            # A session-level advisory lock: the second replica waits here until the first is done.
            lock_id = zlib.crc32(f"agora-migrations:{key}".encode())
            await connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": lock_id})
            try:
                await connection.commit()
                async with connection.begin():
                    await connection.run_sync(lambda sync: _upgrade(config, sync, revision))
            finally:
                await connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id})
                await connection.commit()
    finally:
        await engine.dispose()


# Alembic keeps the running migration's context in module globals (``alembic.context``): two
# migrations in one process at once (the members of a group starting together, ADR 53) would
# tread on each other's, so they take turns.
_ALEMBIC = threading.Lock()


def _upgrade(config: Config, connection: Connection, revision: str) -> None:
    config.attributes["connection"] = connection
    with _ALEMBIC:
        command.upgrade(config, revision)
    log.info(
        "migrated", revision=revision, script_location=config.get_main_option("script_location")
    )


@contextmanager
def _file_lock(database: Path | None) -> Iterator[None]:
    if database is None:
        yield
        return
    lock_path = database.with_name(database.name + ".migrate.lock")
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_env(target_metadata: MetaData | None = None) -> None:
    """The body of every service's ``migrations/env.py``: run on the connection we were handed."""
    connection: Any = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through agora.migrations.upgrade(), not the alembic CLI")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def create_outbox_and_inbox() -> None:
    """Create the chassis's outbox and inbox (:mod:`agora.messaging.schema`): a revision's
    ``upgrade``, or one step of it."""
    create_tables(op)


def drop_outbox_and_inbox() -> None:
    """Drop what :func:`create_outbox_and_inbox` created: a revision's ``downgrade``."""
    drop_tables(op)
