"""The migrations build exactly the schema the orders queries are written against."""

from __future__ import annotations

from agora_tools.pytest_plugin import schema_drift_after_migrating
from orders.adapters import metadata
from orders.bootstrap import MIGRATIONS


def test_the_migrated_schema_matches_the_tables_the_code_uses(database_url: str) -> None:
    assert schema_drift_after_migrating(database_url, MIGRATIONS, metadata) == []
