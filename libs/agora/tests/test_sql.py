"""The repositories' SQL helpers, on SQLite and on PostgreSQL: an insert that skips a row already
there, an insert that updates it, and what a write reports back (rows written, key made)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from unittest.mock import Mock

import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from agora.db import UnitOfWork
from agora.sql import dialect_insert, insert_if_absent, inserted_key, inserts_if_absent, rowcount
from agora_tools.testing import unit_of_work_with

metadata = MetaData()
names = Table(
    "names",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("name", String(50), nullable=False, unique=True),
    Column("seen", Integer, nullable=False),
)


@pytest.fixture
async def uow(database_url: str) -> AsyncIterator[UnitOfWork]:
    async with unit_of_work_with(database_url, metadata) as unit:
        yield unit


def add(connection: Connection, name: str) -> int:
    return rowcount(
        connection.execute(insert_if_absent(connection, names).values(name=name, seen=1))
    )


BUILT = inserts_if_absent(names)


def add_built(connection: Connection, name: str) -> int:
    statement = BUILT[connection.dialect.name]
    return rowcount(connection.execute(statement, {"name": name, "seen": 1}))


def rows(connection: Connection) -> list[tuple[str, int]]:
    found = connection.execute(select(names.c.name, names.c.seen).order_by(names.c.name))
    return [(name, seen) for name, seen in found]


# The insert built on each call, and the one built ahead for each store.
@pytest.mark.parametrize("adder", [add, add_built], ids=["per-call", "built-ahead"])
async def test_an_insert_if_absent_writes_a_new_row_and_skips_one_already_there(
    uow: UnitOfWork, adder: Callable[[Connection, str], int]
) -> None:
    assert await uow.run(adder, "ada") == 1
    assert await uow.run(adder, "ada") == 0
    assert await uow.run(adder, "grace") == 1

    assert await uow.query(rows) == [("ada", 1), ("grace", 1)]


async def test_the_dialects_insert_updates_the_row_already_there(uow: UnitOfWork) -> None:
    def see(connection: Connection, name: str) -> None:
        statement = dialect_insert(connection, names).values(name=name, seen=1)
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=[names.c.name], set_={"seen": names.c.seen + 1}
            )
        )

    await uow.run(see, "ada")
    await uow.run(see, "ada")

    assert await uow.query(rows) == [("ada", 2)]


async def test_a_write_says_how_many_rows_it_wrote_and_the_key_it_made(uow: UnitOfWork) -> None:
    def make(connection: Connection, name: str) -> int:
        key = inserted_key(connection.execute(names.insert().values(name=name, seen=0)))
        assert isinstance(key, int)
        return key

    def touch(connection: Connection) -> int:
        return rowcount(connection.execute(names.update().values(seen=names.c.seen + 1)))

    first = await uow.run(make, "ada")
    second = await uow.run(make, "grace")

    assert second > first
    assert await uow.run(touch) == 2


@pytest.mark.parametrize(
    ("url", "own_insert"),
    [
        ("sqlite://", sqlite.insert),
        ("postgresql+asyncpg://agora@localhost/agora", postgresql.insert),
    ],
)
def test_an_insert_if_absent_is_the_dialects_own_on_conflict_do_nothing(
    url: str, own_insert: Callable[[Table], sqlite.Insert | postgresql.Insert]
) -> None:
    engine = create_engine(url)  # never connected: only its dialect is asked for
    connection = Mock(spec=Connection, dialect=engine.dialect)
    statement = insert_if_absent(connection, names).values(name="ada", seen=1)
    written = own_insert(names).values(name="ada", seen=1).on_conflict_do_nothing()

    assert "ON CONFLICT DO NOTHING" in str(statement.compile(dialect=engine.dialect))
    assert str(statement.compile(dialect=engine.dialect)) == str(
        written.compile(dialect=engine.dialect)
    )
