"""The pytest plugin every service's tests share: loaded by its entry point, a database of the
test's own on each store, a clock the test moves, and the schema drift check."""

from __future__ import annotations

import asyncio
import json
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Column, Integer, MetaData, String, Table

from agora.auth import InvalidToken
from agora.messaging.broker import Broker
from agora_tools import testing
from agora_tools.harness import SHAPES
from agora_tools.pytest_plugin import (
    SHAPE_PARAMS,
    STORE_PARAMS,
    Clock,
    Gathering,
    SecondsClock,
    Service,
    project_label,
    schema_drift_after_migrating,
)

pytest_plugins = ["pytester"]

NOON = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_the_plugin_runs_on_the_stores_the_helpers_know() -> None:
    assert tuple(param.values[0] for param in STORE_PARAMS) == testing.STORES
    assert tuple(param.id for param in STORE_PARAMS) == testing.STORES


def test_the_plugin_runs_the_shop_in_the_shapes_the_harness_knows() -> None:
    assert tuple(SHAPES) == SHAPE_PARAMS


def test_a_test_runs_once_per_store_named_by_it(
    request: pytest.FixtureRequest, store: str, database_url: str, tmp_path: Path
) -> None:
    assert request.node.callspec.id == store
    if store == "sqlite":
        assert database_url == f"sqlite:///{tmp_path / 'data' / 'agora_tools.db'}"
    else:
        assert database_url.startswith(testing.postgres_url("agora_test_agora_tools_"))
        assert request.node.get_closest_marker("postgres") is not None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_test_may_run_on_one_store_only(request: pytest.FixtureRequest, store: str) -> None:
    assert request.node.callspec.id == store == "sqlite"


def test_a_module_shares_one_database_per_store(
    module_store: str, module_database_url: str, module_data_dir: Path
) -> None:
    assert module_store in module_data_dir.name
    if module_store == "sqlite":
        assert module_database_url == f"sqlite:///{module_data_dir / 'data' / 'agora_tools.db'}"


def test_databases_are_named_after_the_project_of_the_test(tmp_path: Path) -> None:
    project = tmp_path / "services" / "click-and-collect"
    (project / "tests" / "integration").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\n")
    assert project_label(project / "tests" / "integration" / "test_x.py") == "click_and_collect"


def test_every_test_run_has_the_plugin(pytester: pytest.Pytester) -> None:
    # In a process of its own, so that pytest finds the plugin through its entry point alone.
    pytester.makepyfile(
        """
        from agora_tools.pytest_plugin import Clock

        def test_fixtures(clock, database_label):
            assert isinstance(clock, Clock)
            assert database_label
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_a_conftest_that_names_its_service_gets_its_app_fixtures(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        """
        import pytest
        from fastapi import FastAPI

        from agora_tools.pytest_plugin import Service

        def app_for(settings):
            app = FastAPI()

            @app.get("/where")
            def where():
                return {"url": settings[0], "data_dir": str(settings[1])}

            @app.get("/boom")
            def boom():
                raise RuntimeError("boom")

            return app

        @pytest.fixture(scope="session")
        def service():
            return Service(lambda url, data_dir: (url, data_dir), app_for)
        """
    )
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
        def test_own(client, settings, database_url, tmp_path):
            assert settings == (database_url, tmp_path)
            assert client.get("/where").json()["url"] == database_url
            assert client.get("/boom").status_code == 500

        @pytest.mark.parametrize("module_store", ["sqlite"], indirect=True)
        def test_shared(shared, module_database_url):
            assert shared.get("/where").json()["url"] == module_database_url
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)


def settings_of(**values: Any) -> dict[str, Any]:
    """Settings as a service's settings class takes them, kept as given."""
    return values


def test_the_standard_service_logs_warnings_on_its_database_with_the_tests_settings_besides(
    tmp_path: Path,
) -> None:
    key = testing.SigningKey()
    made: list[tuple[dict[str, Any], Any]] = []

    def create_app(settings: dict[str, Any], *, verifier: Any) -> str:
        made.append((settings, verifier))
        return "the app"

    service = Service.standard(settings_of, create_app, key, migrations=tmp_path, timeout=0.2)

    assert service.settings_for("sqlite:///x.db", tmp_path, log_level="debug") == {
        "database_url": "sqlite:///x.db",
        "data_dir": tmp_path,
        "log_level": "debug",
        "timeout": 0.2,
    }
    assert service.settings_for("sqlite:///x.db", tmp_path)["log_level"] == "warning"
    assert service.app_for({"database_url": "sqlite:///x.db"}) == "the app"
    assert made[0][0] == {"database_url": "sqlite:///x.db"}
    assert (service.migrations, service.key) == (tmp_path, key)


async def test_the_standard_service_s_app_trusts_the_tokens_its_key_signs() -> None:
    key = testing.SigningKey()
    verifiers: list[Any] = []
    service = Service.standard(settings_of, lambda _, verifier: verifiers.append(verifier), key)

    service.app_for({})
    principal = await verifiers[0].verify(key.sign(["customer"], sub="ada"))

    assert principal.id == "ada"
    with pytest.raises(InvalidToken):
        await verifiers[0].verify(testing.SigningKey().sign(["customer"]))


def test_a_service_with_a_key_and_migrations_gets_users_and_a_migrated_database(
    pytester: pytest.Pytester,
) -> None:
    migrations(pytester.path)
    pytester.makeconftest(
        """
        from pathlib import Path

        import pytest

        from agora_tools.pytest_plugin import Service
        from agora_tools.testing import SigningKey

        KEY = SigningKey()

        @pytest.fixture(scope="session")
        def service():
            migrations = Path(__file__).parent / "migrations"
            return Service(lambda url, data_dir: url, lambda _: None, migrations, KEY)
        """
    )
    pytester.makepyfile(
        """
        import asyncio

        import pytest
        from sqlalchemy import text

        from agora_tools.testing import read_from

        from conftest import KEY

        @pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
        def test_migrated(migrated, database_url):
            assert migrated == database_url
            count = read_from(migrated, lambda s: s.scalar(text("select count(*) from things")))
            assert count == 0

        def test_users(admin, customer):
            verify = KEY.verifier().verify
            boss = asyncio.run(verify(admin.headers["Authorization"].removeprefix("Bearer ")))
            shopper = asyncio.run(verify(customer.headers["Authorization"].removeprefix("Bearer ")))
            assert (boss.id, boss.is_admin) == (admin.id, True)
            assert (shopper.id, shopper.is_admin) == (customer.id, False)
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)


def problem(status: int, body_status: int, content_type: str = testing.PROBLEM) -> httpx.Response:
    body = json.dumps({"title": "Refused", "status": body_status}).encode()
    return httpx.Response(status, headers={"content-type": content_type}, content=body)


def test_a_problem_of_its_status_is_a_problem_and_its_body_is_returned() -> None:
    assert testing.assert_problem(problem(409, 409), 409) == {"title": "Refused", "status": 409}


@pytest.mark.parametrize(
    "answer",
    [problem(400, 409), problem(409, 400), problem(409, 409, "application/json")],
    ids=["another-status", "another-status-in-its-body", "plain-json"],
)
def test_anything_else_is_not_the_problem_asked_for(answer: httpx.Response) -> None:
    with pytest.raises(AssertionError):
        testing.assert_problem(answer, 409)


def test_an_order_s_id_is_new_each_time() -> None:
    first, second = testing.an_order(), testing.an_order()

    assert first != second
    assert first.startswith("order-")
    assert len(first) == len("order-") + 12


def test_the_clock_tells_the_real_time_until_it_is_moved() -> None:
    clock = Clock()
    before = datetime.now(UTC)
    assert before <= clock() <= datetime.now(UTC)
    later = clock.advance(hours=2)
    assert later - timedelta(hours=2) >= before
    assert clock() >= later


def test_the_clock_stands_at_the_moment_the_test_pins() -> None:
    clock = Clock(NOON)
    assert clock() == NOON
    assert clock.advance(90) == NOON + timedelta(seconds=90)
    assert clock.advance(minutes=-1) == NOON + timedelta(seconds=30)
    clock.now = NOON + timedelta(days=1)
    assert clock() == NOON + timedelta(days=1, seconds=30)


def test_a_reset_clock_tells_the_real_time_again() -> None:
    clock = Clock(NOON)
    clock.advance(hours=5)
    clock.reset()
    assert abs(clock() - datetime.now(UTC)) < timedelta(seconds=5)


def test_a_clock_in_seconds_stands_where_the_test_puts_it() -> None:
    clock = SecondsClock()
    started = clock()
    clock.now += 1.5

    assert (started, clock(), SecondsClock(5.0)()) == (1000.0, 1001.5, 5.0)


async def test_a_gathering_holds_each_caller_until_all_are_inside() -> None:
    gathering = Gathering()
    await gathering.gathered()  # gathering nobody: no wait
    gathering.gather = 2
    first = asyncio.create_task(gathering.gathered())
    await asyncio.sleep(0.05)
    assert not first.done()
    await gathering.gathered()
    await asyncio.wait_for(first, timeout=1)


async def test_a_key_signs_tokens_its_verifier_accepts() -> None:
    key = testing.SigningKey()

    principal = await key.verifier().verify(key.sign(["customer", "admin"], sub="ada"))

    assert (principal.id, principal.is_admin) == ("ada", True)


async def test_each_user_is_someone_new_whose_token_says_who_they_are() -> None:
    key = testing.SigningKey()
    ada, bob = key.user("admin"), key.user()

    token = ada.headers["Authorization"].removeprefix("Bearer ")
    principal = await key.verifier().verify(token)

    assert (principal.id, principal.email, principal.roles) == (
        ada.id,
        ada.email,
        ("customer", "admin"),
    )
    assert (bob.id, bob.email) != (ada.id, ada.email)


@pytest.mark.parametrize("flaw", testing.BAD_TOKENS)
async def test_a_spoilt_token_is_refused(flaw: str) -> None:
    key = testing.SigningKey()

    with pytest.raises(InvalidToken):
        await key.verifier().verify(key.spoilt(flaw, ["admin"], sub="ada"))


def test_a_flaw_nobody_knows_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown flaw"):
        testing.SigningKey().spoilt("too-short")


def test_every_page_follows_the_cursors_to_the_last_and_no_further() -> None:
    app = FastAPI()

    @app.get("/things")
    def things(cursor: str = "0", limit: int = 2, end: int = 5) -> dict[str, Any]:
        start = int(cursor)
        following = start + limit
        return {
            "items": list(range(start, min(following, end))),
            "next_cursor": str(following) if following < end else None,
        }

    with TestClient(app) as client:
        assert testing.every_page(client, "/things") == [[0, 1], [2, 3], [4]]
        with pytest.raises(AssertionError, match="never ended"):
            testing.every_page(client, "/things", limit=1, end=1000)


async def test_a_module_has_a_broker_of_its_own(nats_server: testing.NatsServer) -> None:
    broker = await testing.connected(Broker(nats_server.url, name="plugin-test"))
    try:
        assert broker.connected
        assert nats_server.port != 4222
    finally:
        await broker.close()


def test_tasks_at_once_all_run_and_say_what_they_raised() -> None:
    ran: list[str] = []

    def fail() -> None:
        raise RuntimeError("no")

    failures = testing.at_once(lambda: ran.append("a"), fail, lambda: ran.append("b"))

    assert sorted(ran) == ["a", "b"]
    assert [str(failure) for failure in failures] == ["no"]


def migrations(directory: Path) -> Path:
    """Migrations that make a table ``things`` (id, name) and the chassis's outbox and inbox."""
    versions = directory / "migrations" / "versions"
    versions.mkdir(parents=True)
    (directory / "migrations" / "env.py").write_text(
        "from agora.migrations import run_env\n\nrun_env()\n"
    )
    (versions / "0001_things.py").write_text(
        textwrap.dedent(
            """
            import sqlalchemy as sa
            from alembic import op

            from agora.messaging.schema import create_tables

            revision = "0001"
            down_revision = None


            def upgrade() -> None:
                op.create_table(
                    "things",
                    sa.Column("id", sa.Integer(), primary_key=True),
                    sa.Column("name", sa.String(40), nullable=False),
                )
                create_tables(op)
            """
        )
    )
    return directory / "migrations"


def things(*extra: Column[str]) -> MetaData:
    metadata = MetaData()
    Table(
        "things",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("name", String(40), nullable=False),
        *extra,
    )
    return metadata


def test_migrations_that_build_the_code_s_tables_show_no_drift(
    database_url: str, tmp_path: Path
) -> None:
    assert schema_drift_after_migrating(database_url, migrations(tmp_path), things()) == []


def test_a_column_the_migrations_never_made_is_drift(database_url: str, tmp_path: Path) -> None:
    drift = schema_drift_after_migrating(
        database_url, migrations(tmp_path), things(Column("colour", String(20)))
    )
    assert [(change[0], change[2], change[3].name) for change in drift] == [
        ("add_column", "things", "colour")
    ]
