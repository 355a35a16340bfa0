"""The column types and columns the services' schemas have in common.

A service's migrations and its tables (``adapters.metadata``) build their columns with these, so
both say the same thing once, on SQLite and on PostgreSQL alike. Revisions that databases have
already applied call them too: what a function here builds never changes (a different column is
a new function), or the schema those revisions make would change under the databases that know
them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Integer, String
from sqlalchemy.types import TypeEngine


def key_text(length: int) -> TypeEngine[str]:
    """Text that sorts in code point order on both stores, as it does in Python: the "C"
    collation on PostgreSQL (SQLite compares that way already), so that keys are locked, pages
    cut and names sorted in one order whichever store holds them."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


def serial() -> TypeEngine[int]:
    """A 64-bit counter on PostgreSQL; SQLite numbers a row only through an INTEGER key."""
    return BigInteger().with_variant(Integer(), "sqlite")


def serial_key(name: str = "id") -> Column[Any]:
    """A primary key the store numbers itself (see :func:`serial`)."""
    return Column(name, serial(), primary_key=True, autoincrement=True)


def timestamp(name: str, *, nullable: bool = False) -> Column[Any]:
    """A moment: every time the services store carries its time zone."""
    return Column(name, DateTime(timezone=True), nullable=nullable)
