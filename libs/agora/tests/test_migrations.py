"""Migrations: applied once, also when replicas start at the same moment."""

from __future__ import annotations

import multiprocessing
import textwrap
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import Connection, create_engine, inspect, pool, text

from agora.app import Migrate, ServiceDefinition, create_service_app
from agora.messaging.schema import PENDING_INDEX, inbox, outbox
from agora.migrations import upgrade
from agora.settings import ServiceSettings
from agora_tools.testing import read_from

ENV = """
from agora.migrations import run_env

run_env()
"""

# A revision that cannot run twice: the second run would fail on the table, and the row
# shows how many times it ran. The sleep widens the window in which two runners could overlap.
REVISION = """
import time

from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table("things", sa.Column("id", sa.Integer, primary_key=True))
    time.sleep(0.5)
    op.execute("INSERT INTO things (id) VALUES (1)")
"""


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    location = tmp_path / "migrations"
    (location / "versions").mkdir(parents=True)
    (location / "env.py").write_text(textwrap.dedent(ENV))
    (location / "versions" / "0001_things.py").write_text(textwrap.dedent(REVISION))
    return location


def rows(url: str) -> list[tuple[int, str]]:
    """How many times the revision's insert ran, and the version Alembic recorded."""

    def read(connection: Connection) -> list[tuple[int, str]]:
        statement = text("SELECT (SELECT count(*) FROM things), version_num FROM alembic_version")
        return [(int(count), str(version)) for count, version in connection.execute(statement)]

    return read_from(url, read)


def test_upgrade_is_applied_once_and_is_idempotent(database_url: str, scripts: Path) -> None:
    upgrade(database_url, scripts)
    upgrade(database_url, scripts)

    assert rows(database_url) == [(1, "0001")]


def test_a_services_migrate_reads_its_settings_unless_given_them(
    database_url: str, scripts: Path, tmp_path: Path
) -> None:
    given = f"sqlite:///{tmp_path / 'given.db'}"
    migrate = Migrate(lambda: ServiceSettings(database_url=database_url), scripts)

    migrate()
    migrate(ServiceSettings(database_url=given))

    assert rows(database_url) == [(1, "0001")]
    assert rows(given) == [(1, "0001")]


@pytest.mark.parametrize("migrate_on_start", [True, False])
def test_an_app_migrates_as_it_starts_unless_its_migrations_ran_before(
    database_url: str, scripts: Path, migrate_on_start: bool
) -> None:
    settings = ServiceSettings(database_url=database_url, migrate_on_start=migrate_on_start)
    app = create_service_app(settings, ServiceDefinition("things", migrations=scripts))

    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200

    def migrated(connection: Connection) -> bool:
        return inspect(connection).has_table("alembic_version")

    assert read_from(database_url, migrated) is migrate_on_start


def test_two_replicas_migrating_at_once_do_not_race(database_url: str, scripts: Path) -> None:
    context = multiprocessing.get_context("spawn")
    runners = [context.Process(target=upgrade, args=(database_url, scripts)) for _ in range(2)]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join(timeout=60)

    assert [runner.exitcode for runner in runners] == [0, 0]
    assert rows(database_url) == [(1, "0001")]


# A service's revision that adds the outbox and inbox, as the services write it.
OUTBOX_REVISION = """
from agora.migrations import create_outbox_and_inbox, drop_outbox_and_inbox

revision = "0002"
down_revision = "0001"

upgrade = create_outbox_and_inbox
downgrade = drop_outbox_and_inbox
"""


def tables_and_indexes(url: str) -> tuple[set[str], set[str]]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            inspector = inspect(connection)
            tables = set(inspector.get_table_names())
            if outbox.name not in tables:
                return tables, set()
            return tables, {index["name"] or "" for index in inspector.get_indexes(outbox.name)}
    finally:
        engine.dispose()


def downgrade_sqlite(url: str, scripts: Path, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(scripts))
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, revision)
    finally:
        engine.dispose()


def test_the_outbox_revision_creates_the_outbox_and_inbox_and_drops_them_again(
    tmp_path: Path, scripts: Path
) -> None:
    (scripts / "versions" / "0002_outbox_and_inbox.py").write_text(OUTBOX_REVISION)
    url = f"sqlite:///{tmp_path / 'data' / 'outbox.db'}"
    (tmp_path / "data").mkdir()

    upgrade(url, scripts)
    assert tables_and_indexes(url) == (
        {"alembic_version", "things", outbox.name, inbox.name},
        {PENDING_INDEX},
    )

    downgrade_sqlite(url, scripts, "0001")
    assert tables_and_indexes(url) == ({"alembic_version", "things"}, set())
