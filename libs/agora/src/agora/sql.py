"""What the services' SQL repositories write alike on SQLite and PostgreSQL.

An insert that leaves alone a row already there (``INSERT ... ON CONFLICT DO NOTHING``) is spelt
by each dialect's own ``insert``; :func:`insert_if_absent` picks the connection's. And
``Connection.execute`` types every result as a plain ``Result``, though a write's is the
``CursorResult`` that counts its rows and knows the key it made: :func:`rowcount` and
:func:`inserted_key` read those, typed. A worker's claim on a row (:mod:`agora.tasks`) is one
conditional UPDATE of its lease columns: :func:`take_lease`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeAlias

from sqlalchemy import ColumnElement, Connection, CursorResult, Result, Table
from sqlalchemy.dialects import postgresql, sqlite

# The statement of either store, with its ON CONFLICT clauses (same arguments on both).
Insert: TypeAlias = postgresql.Insert | sqlite.Insert


def dialect_insert(connection: Connection, table: Table) -> Insert:
    """``INSERT INTO table`` in the connection's dialect, which can say what to do ``ON CONFLICT``
    (``on_conflict_do_nothing``, ``on_conflict_do_update``)."""
    if connection.dialect.name == "sqlite":
        return sqlite.insert(table)
    return postgresql.insert(table)


def insert_if_absent(connection: Connection, table: Table) -> Insert:
    """``INSERT INTO table ... ON CONFLICT DO NOTHING`` in the connection's dialect: a row whose
    key, or any unique column, is taken already is not written, and nothing is raised. On
    PostgreSQL a row another transaction is inserting right now waits for that one to end.
    :func:`rowcount` says whether it was written."""
    return dialect_insert(connection, table).on_conflict_do_nothing()


def inserts_if_absent(table: Table) -> dict[str, Insert]:
    """:func:`insert_if_absent` of ``table`` built once for each store, by dialect name: for a
    statement run so often (an inbox's, a processor's record) that building it on every call
    costs more than running it. Its values are passed at execution."""
    return {
        "postgresql": postgresql.insert(table).on_conflict_do_nothing(),
        "sqlite": sqlite.insert(table).on_conflict_do_nothing(),
    }


def rowcount(result: Result[Any]) -> int:
    """How many rows the INSERT, UPDATE or DELETE that answered ``result`` wrote (for an
    UPDATE, the rows its WHERE matched)."""
    return _written(result).rowcount


def inserted_key(result: Result[Any]) -> Any:
    """The primary key of the row a single-row INSERT wrote (its first column, for a key of
    one column, such as the number the store gave it)."""
    key = _written(result).inserted_primary_key
    if key is None:
        raise TypeError("the statement inserted no row whose key it knows")
    return key[0]


def take_lease(
    connection: Connection,
    table: Table,
    *where: ColumnElement[bool],
    token: str,
    until: datetime,
    **values: Any,
) -> bool:
    """Lease the row of ``table`` that ``where`` selects (its key, and that it is due) to
    ``token`` until ``until``: its ``lease_token`` and ``lease_until`` columns, with ``values``,
    set in one conditional UPDATE. Whether this call took it: of two workers taking the same row,
    the second one's update finds it no longer due (PostgreSQL re-reads the row once the first
    commits) and changes nothing."""
    statement = table.update().where(*where).values(lease_token=token, lease_until=until, **values)
    return rowcount(connection.execute(statement)) == 1


def _written(result: Result[Any]) -> CursorResult[Any]:
    if not isinstance(result, CursorResult):
        raise TypeError(f"a write answers a CursorResult, not a {type(result).__name__}")
    return result
