"""The migrations build exactly the schema payments' queries are written against."""

from __future__ import annotations

from agora_tools.pytest_plugin import schema_drift_after_migrating
from payments.adapters import metadata
from payments.bootstrap import MIGRATIONS


def test_the_migrated_schema_matches_the_tables_the_code_uses(database_url: str) -> None:
    assert schema_drift_after_migrating(database_url, MIGRATIONS, metadata) == []
