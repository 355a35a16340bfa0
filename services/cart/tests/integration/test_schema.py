"""The migrations build exactly the schema the cart's queries are written against."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agora.migrations import upgrade
from agora_tools.testing import STORES, database, schema_drift
from cart.adapters import metadata
from cart.bootstrap import MIGRATIONS


@pytest.fixture(params=STORES)
def migrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, "cart", tmp_path) as url:
        upgrade(url, MIGRATIONS)
        upgrade(url, MIGRATIONS)  # a second run finds the database current
        yield url


async def test_the_migrated_schema_matches_the_tables_the_code_uses(migrated: str) -> None:
    assert await schema_drift(migrated, metadata) == []
