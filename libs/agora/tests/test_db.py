"""The unit of work: commit on return, roll back on error, and wait out a busy SQLite database
without blocking the event loop — on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from pathlib import Path

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, func, insert, select

from agora.db import DatabaseBusy, UnitOfWork, on_commit
from agora_tools.testing import file_mode

metadata = MetaData()
notes = Table(
    "notes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("text", String(100), nullable=False, unique=True),
)


@pytest.fixture
async def uow(database_url: str) -> UnitOfWork:
    unit = UnitOfWork(database_url)
    await unit.run(lambda connection: metadata.create_all(connection))
    return unit


def add(connection: Connection, text: str) -> None:
    connection.execute(insert(notes).values(text=text))


def add_then_fail(connection: Connection, text: str) -> None:
    add(connection, text)
    raise LookupError("the handler changed its mind")


def count(connection: Connection) -> int:
    return int(connection.execute(select(func.count()).select_from(notes)).scalar_one())


async def test_a_handler_that_returns_is_committed(uow: UnitOfWork) -> None:
    await uow.run(add, "first")

    assert await uow.query(count) == 1
    await uow.dispose()


async def test_a_handler_that_raises_leaves_nothing_behind(uow: UnitOfWork) -> None:
    with pytest.raises(LookupError):
        await uow.run(add_then_fail, "half-written")

    assert await uow.query(count) == 0
    await uow.dispose()


async def test_what_a_handler_asks_after_its_commit_runs_only_once_committed(
    uow: UnitOfWork,
) -> None:
    seen: list[str] = []

    def add_and_tell(connection: Connection, text: str, fail: bool) -> None:
        add(connection, text)
        on_commit(connection, lambda: seen.append(text))
        if fail:
            raise LookupError("the handler changed its mind")

    with pytest.raises(LookupError):
        await uow.run(add_and_tell, "rolled back", True)
    await uow.run(add_and_tell, "kept", False)

    assert seen == ["kept"]
    assert await uow.query(count) == 1
    await uow.dispose()


async def test_a_query_commits_nothing(uow: UnitOfWork) -> None:
    await uow.query(add, "not kept")

    assert await uow.query(count) == 0
    await uow.dispose()


async def test_what_a_read_asks_for_at_a_commit_never_runs(uow: UnitOfWork) -> None:
    # The connection's info outlives its transaction: a read's request must not reach the next
    # transaction on the same pooled connection.
    seen: list[str] = []

    def count_and_ask(connection: Connection) -> int:
        on_commit(connection, lambda: seen.append("read"))
        return count(connection)

    assert await uow.query(count_and_ask) == 0
    await uow.run(add, "written after")

    assert seen == []
    assert await uow.query(count) == 1
    await uow.dispose()


async def test_a_failing_read_gives_its_connection_back(uow: UnitOfWork) -> None:
    def fail(connection: Connection) -> None:
        add(connection, "half-read")
        raise LookupError("the handler changed its mind")

    # More failing reads than the pool holds connections, then more reads at once than that.
    for _ in range(25):
        with pytest.raises(LookupError):
            await uow.query(fail)
    counts = await asyncio.gather(*(uow.query(count) for _ in range(50)))

    assert counts == [0] * 50
    await uow.run(add, "written after")
    assert await uow.query(count) == 1
    await uow.dispose()


async def test_concurrent_writers_all_land(uow: UnitOfWork) -> None:
    await asyncio.gather(*(uow.run(add, f"note {i}") for i in range(200)))

    assert await uow.query(count) == 200
    await uow.dispose()


async def test_a_locked_sqlite_database_is_awaited_not_blocked_on(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    uow = UnitOfWork(f"sqlite:///{path}")
    await uow.run(lambda connection: metadata.create_all(connection))
    # Another process's writer, played by a raw connection holding the write lock.
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    beating = asyncio.create_task(heartbeat())
    writing = asyncio.create_task(uow.run(add, "waited"))
    await asyncio.sleep(0.3)
    assert not writing.done(), "the write must wait while another holds the lock"
    other.execute("COMMIT")
    other.close()
    await writing
    beating.cancel()

    # The loop kept running while the write waited: the heartbeat ticked many times.
    assert ticks > 10
    assert await uow.query(count) == 1
    await uow.dispose()


async def test_a_write_takes_the_lock_at_its_first_statement_and_a_read_takes_none(
    tmp_path: Path,
) -> None:
    path = tmp_path / "held.db"
    uow = UnitOfWork(f"sqlite:///{path}")
    await uow.run(lambda connection: metadata.create_all(connection))
    await uow.run(add, "before")
    calls = 0

    def counted(connection: Connection, text: str) -> None:
        nonlocal calls
        count(connection)  # the first statement, which begins the transaction
        calls += 1
        add(connection, text)

    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's writer holds the write lock
    try:
        # Reads begin DEFERRED: the lock does not hold them up.
        assert await uow.query(count) == 1
        writing = asyncio.create_task(uow.run(counted, "after"))
        await asyncio.sleep(0.3)
        # Writes begin IMMEDIATE: each try fails at BEGIN, so not even a read gets through.
        assert not writing.done()
        assert calls == 0
    finally:
        other.execute("COMMIT")
        other.close()
    await writing

    assert calls == 1
    assert await uow.query(count) == 2
    await uow.dispose()


async def test_a_database_busy_past_the_deadline_is_a_503(tmp_path: Path) -> None:
    path = tmp_path / "stuck.db"
    uow = UnitOfWork(f"sqlite:///{path}", busy_deadline=0.2)
    await uow.run(lambda connection: metadata.create_all(connection))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(DatabaseBusy) as caught:
            await uow.run(add, "never")
    finally:
        other.execute("ROLLBACK")
        other.close()

    assert caught.value.status == 503
    await uow.dispose()


# One replica's share of writes, in a process of its own (a script: a spawned process cannot
# import this test module).
WRITER = """
import asyncio, sys
from sqlalchemy import insert
from agora.db import UnitOfWork
from test_db_schema import notes

async def write(url, prefix, count):
    uow = UnitOfWork(url)
    try:
        await asyncio.gather(*(
            uow.run(lambda s, text: s.execute(insert(notes).values(text=text)), f"{prefix}-{i}")
            for i in range(count)
        ))
    finally:
        await uow.dispose()

asyncio.run(write(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""

SCHEMA = """
from sqlalchemy import Column, Integer, MetaData, String, Table
notes = Table(
    "notes", MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("text", String(100), nullable=False, unique=True),
)
"""


async def test_two_processes_writing_one_sqlite_database_both_land_every_write(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    uow = UnitOfWork(url)
    await uow.run(lambda connection: metadata.create_all(connection))
    (tmp_path / "test_db_schema.py").write_text(SCHEMA)
    writers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WRITER,
            url,
            name,
            "300",
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(tmp_path)},
        )
        for name in ("one", "two")
    ]
    codes = [await asyncio.wait_for(writer.wait(), 120) for writer in writers]

    # Neither replica's writes failed on the other's lock: each waited its turn.
    assert codes == [0, 0]
    assert await uow.query(count) == 600
    await uow.dispose()


async def test_a_sqlite_database_and_its_journal_files_are_readable_by_their_owner_only(
    tmp_path: Path, umask_022: None
) -> None:
    data = tmp_path / "data"
    uow = UnitOfWork(f"sqlite:///{data / 'shop.db'}")
    await uow.run(lambda connection: metadata.create_all(connection))
    await uow.run(add, "a note")

    names = ("shop.db", "shop.db-wal", "shop.db-shm")
    modes = {name: file_mode(data / name) for name in names}
    await uow.dispose()

    assert modes == dict.fromkeys(names, 0o600)
    assert file_mode(data) == 0o700, "a folder the database needed is made owner-only"


async def test_a_database_an_older_version_left_readable_by_others_is_narrowed_when_opened(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    sqlite3.connect(path).close()
    path.chmod(0o644)

    uow = UnitOfWork(f"sqlite:///{path}")
    await uow.run(lambda connection: metadata.create_all(connection))
    await uow.dispose()

    assert file_mode(path) == 0o600
