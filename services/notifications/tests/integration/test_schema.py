"""The migrations build exactly the schema notifications' queries are written against."""

from __future__ import annotations

from agora_tools.pytest_plugin import schema_drift_after_migrating
from notifications.adapters import metadata
from notifications.bootstrap import MIGRATIONS


def test_the_migrated_schema_matches_the_tables_the_code_uses(database_url: str) -> None:
    assert schema_drift_after_migrating(database_url, MIGRATIONS, metadata) == []
