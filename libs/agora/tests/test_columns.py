"""The shared columns declare on each store what the services' revisions always declared."""

from __future__ import annotations

from sqlalchemy import Column, MetaData, Table, create_mock_engine
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateTable

from agora.columns import key_text, serial, serial_key, timestamp


def dialect(url: str) -> Dialect:
    return create_mock_engine(url, executor=lambda *_: None).dialect


def ddl(table: Table) -> dict[str, str]:
    """The table's CREATE TABLE as each store is given it."""
    return {
        store: str(CreateTable(table).compile(dialect=dialect(url)))
        for store, url in (("sqlite", "sqlite://"), ("postgresql", "postgresql+asyncpg://"))
    }


def test_key_text_sorts_in_code_point_order_on_postgresql_as_sqlite_does_already() -> None:
    created = ddl(Table("stock", MetaData(), Column("sku", key_text(32), nullable=False)))

    assert 'sku VARCHAR(32) COLLATE "C" NOT NULL' in created["postgresql"]
    assert "sku VARCHAR(32) NOT NULL" in created["sqlite"]


def test_a_serial_key_is_a_64_bit_counter_on_postgresql_and_sqlites_rowid_key() -> None:
    created = ddl(Table("things", MetaData(), serial_key()))

    assert "id BIGSERIAL NOT NULL" in created["postgresql"]
    assert "id INTEGER NOT NULL" in created["sqlite"]
    assert "PRIMARY KEY (id)" in created["sqlite"]


def test_a_serial_refers_to_a_serial_key_with_the_same_type() -> None:
    created = ddl(Table("refs", MetaData(), Column("thing_id", serial(), nullable=False)))

    assert "thing_id BIGINT NOT NULL" in created["postgresql"]
    assert "thing_id INTEGER NOT NULL" in created["sqlite"]


def test_a_timestamp_keeps_its_time_zone_and_is_required_unless_said_otherwise() -> None:
    created = ddl(Table("things", MetaData(), timestamp("at"), timestamp("gone", nullable=True)))

    assert "at TIMESTAMP WITH TIME ZONE NOT NULL" in created["postgresql"]
    assert "\tgone TIMESTAMP WITH TIME ZONE\n" in created["postgresql"]
    assert "\tgone DATETIME\n" in created["sqlite"]
