"""The migrations build exactly the schema the catalog's queries are written against."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, MetaData, create_engine
from sqlalchemy.ext.asyncio import create_async_engine

from agora.db import async_url
from agora.messaging import schema as messaging_schema
from agora.migrations import upgrade
from agora.testing import STORES, database
from catalog.adapters import metadata
from catalog.bootstrap import MIGRATIONS


@pytest.fixture(params=STORES)
def migrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, "catalog", tmp_path) as url:
        upgrade(url, MIGRATIONS)
        upgrade(url, MIGRATIONS)  # a second run finds the database current
        yield url


def differences(connection: Connection) -> list[Any]:
    # The service's own tables and the chassis's outbox and inbox, which its migrations also make.
    both = MetaData()
    for source in (metadata, messaging_schema.metadata):
        for table in source.tables.values():
            table.to_metadata(both)
    return list(compare_metadata(MigrationContext.configure(connection), both))


async def schema_differences(url: str) -> list[Any]:
    if url.startswith("sqlite"):
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                return differences(connection)
        finally:
            engine.dispose()
    async_engine = create_async_engine(async_url(url))
    try:
        async with async_engine.connect() as connection:
            return await connection.run_sync(differences)
    finally:
        await async_engine.dispose()


async def test_the_migrated_schema_matches_the_tables_the_code_uses(migrated: str) -> None:
    assert await schema_differences(migrated) == []
