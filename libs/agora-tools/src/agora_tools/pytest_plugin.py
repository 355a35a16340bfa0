"""The fixtures every service's tests share, so that a service's conftest holds only what is its
own: its settings, its app, its fakes.

pytest loads this plugin into every run in the workspace through agora-tools' ``pytest11`` entry
point (``-p no:agora`` leaves it out), so a service, and one that ``agora new`` writes, has these
fixtures without a line of set-up. Every pytest run pays for loading it, so it imports nothing
heavy until a fixture asks for it.

``database_url``
    A database of the test's own, once per store: ``[sqlite]``, a file under ``tmp_path``, and
    ``[postgresql]``, a fresh database on the shared server, dropped afterwards. The PostgreSQL
    runs carry the ``postgres`` mark; on a machine without the server they skip, saying why, and
    under CI they fail (``agora_tools.testing.require_server``). A test meant for one store only
    says so: ``@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)``.
``store``
    The store of the test's ``database_url``: ``sqlite`` or ``postgresql``.
``module_store``, ``module_data_dir``, ``module_database_url``
    The same, shared by the tests of one module (for an app that is slow to start and that the
    tests leave as they found it), with a data directory of its own per store.
``database_label``
    The name those databases carry: the folder of the project the test belongs to
    (``services/orders`` gives ``orders``). A conftest may override it (module scope or wider).
``clock``
    A :class:`Clock` the test moves; hand it to the app in the real clock's place.
``nats_server``
    A nats-server with JetStream of the module's own (:class:`agora_tools.testing.NatsServer`),
    on a free port: the shared one on 4222 is never touched.
``umask_022``
    The usual umask for the test, which lets everyone read new files, so that the modes a test
    sees (``agora_tools.testing.file_mode``) are the code's doing.
``settings``, ``client``, ``shared``, ``migrated``
    For a conftest that says how its service's app is made, as a :class:`Service` in the fixture
    ``service`` (module scope or wider; :meth:`Service.standard` makes the usual one): the
    settings of an app on the test's ``database_url``; that app, running, under a
    ``TestClient``; one app on the module's database, for tests that leave it as they found it;
    and the test's ``database_url`` with the service's migrations run on it. A conftest's own
    fixture of the same name takes the place of the plugin's.
``signing_key``, ``admin``, ``customer``
    The key the service's app trusts (its :class:`Service`'s ``key``; a conftest may hand over
    another in a ``signing_key`` fixture of its own), and a new administrator and a new customer
    (:class:`agora_tools.testing.User`) with tokens that key signed.

:class:`SecondsClock` is the clock for code that counts time in seconds (``time.monotonic``).

:class:`Gathering` lets a fake of another service hold its callers until they are all inside.

:func:`on_migrated` makes a conftest's fixture of something it opens over the ``migrated``
database (a bench of the service's handlers, say).

:func:`schema_drift_after_migrating` is the schema drift check: each service's ``test_schema``
asserts with it that its migrations build exactly the tables its code is written against.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pytest

if TYPE_CHECKING:
    from fastapi.testclient import TestClient
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from sqlalchemy import MetaData

    from agora_tools.testing import NatsServer
    from agora_tools.tokens import SigningKey, User

SettingsT = TypeVar("SettingsT")
T = TypeVar("T")

# agora_tools.testing.STORES, spelt out here so that loading the plugin does not load the chassis
# (a test of the plugin holds the two equal); PostgreSQL's runs carry the `postgres` mark.
STORE_PARAMS = (
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
)

# agora_tools.harness.SHAPES's names, spelt out for the same reason (a test holds them equal).
SHAPE_PARAMS = ("apart", "together")


@pytest.fixture(scope="module", params=SHAPE_PARAMS)
def shape(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """``agora up``'s arguments for one of its shapes (ADR 53): a test that asks for it runs
    against a shop of a process per service, then against one of a single process."""
    from agora_tools.harness import SHAPES

    return SHAPES[request.param]


def pytest_configure(config: pytest.Config) -> None:
    # A project that runs its tests without the workspace's configuration knows the mark too.
    config.addinivalue_line("markers", "postgres: needs the PostgreSQL server on 127.0.0.1:5432")


class Clock:
    """Time as the test says it is: the real time, or the moment the test pins (``now``), moved
    on by however far the test has advanced it. Call it as the app calls its clock."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now
        self.ahead = timedelta()

    def __call__(self) -> datetime:
        return (self.now or datetime.now(UTC)) + self.ahead

    def advance(self, seconds: float = 0, **units: float) -> datetime:
        """Move time on (``advance(60)``, ``advance(hours=2)``; back with a negative amount);
        the new time."""
        self.ahead += timedelta(seconds=seconds, **units)
        return self()

    def reset(self) -> None:
        """The real time again."""
        self.now = None
        self.ahead = timedelta()


class SecondsClock:
    """Time in seconds, as ``time.time`` or ``time.monotonic`` count it, standing at ``now`` until
    the test sets it or moves it on (``clock.now += 60``). Call it as the code calls its clock."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Gathering:
    """For a fake of another service, to make requests race: with ``gather`` set to n, each call
    waits in :meth:`gathered` until n calls are inside (ten seconds at the most)."""

    def __init__(self) -> None:
        self.gather = 0
        self._arrived = 0
        self._all_in: asyncio.Event | None = None

    async def gathered(self) -> None:
        if not self.gather:
            return
        self._all_in = self._all_in or asyncio.Event()
        self._arrived += 1
        if self._arrived >= self.gather:
            self._all_in.set()
        await asyncio.wait_for(self._all_in.wait(), timeout=10)


def project_label(path: Path) -> str:
    """The name of the project ``path`` belongs to (the nearest folder with a
    ``pyproject.toml``), fit to name a database: lower case, ``_`` between words."""
    folder = next(
        (parent for parent in path.parents if (parent / "pyproject.toml").is_file()), path.parent
    )
    return re.sub(r"[^a-z0-9]+", "_", folder.name.lower()).strip("_") or "test"


@pytest.fixture(scope="module")
def database_label(request: pytest.FixtureRequest) -> str:
    return project_label(request.path)


@pytest.fixture(params=STORE_PARAMS)
def database_url(
    request: pytest.FixtureRequest, database_label: str, tmp_path: Path
) -> Iterator[str]:
    from agora_tools.testing import database

    with database(request.param, database_label, tmp_path) as url:
        yield url


@pytest.fixture
def store(database_url: str) -> str:
    # The URLs that agora_tools.testing.database makes begin with their store's name.
    return database_url.split(":", 1)[0]


@pytest.fixture(scope="module", params=STORE_PARAMS)
def module_store(request: pytest.FixtureRequest) -> str:
    param: str = request.param
    return param


@pytest.fixture(scope="module")
def module_data_dir(
    module_store: str, database_label: str, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return tmp_path_factory.mktemp(f"{database_label}-{module_store}")


@pytest.fixture(scope="module")
def module_database_url(
    module_store: str, database_label: str, module_data_dir: Path
) -> Iterator[str]:
    from agora_tools.testing import database

    with database(module_store, database_label, module_data_dir) as url:
        yield url


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    from agora_tools.testing import NatsServer

    with NatsServer(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture(scope="module")
def promtool() -> str:
    """The path of promtool (Debian's prometheus package), installed when missing."""
    from agora_tools.testing import debian_command

    return debian_command("promtool", "prometheus")


@pytest.fixture
def finished_spans() -> Iterator[InMemorySpanExporter]:
    """The spans this process finishes during the test, from the global SDK tracer provider
    (installed if none is): for code that traces through the global provider, as the relay and
    the consumers do."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from agora.telemetry import configure_tracing

    class Listening(SimpleSpanProcessor):
        """Hands spans on until the test is over. A provider cannot let go of a processor, and
        one shut down warns on every later span of the process."""

        listening = True

        def on_end(self, span: ReadableSpan) -> None:
            if self.listening:
                super().on_end(span)

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = configure_tracing("test")
    exporter = InMemorySpanExporter()
    processor = Listening(exporter)
    provider.add_span_processor(processor)
    yield exporter
    processor.listening = False
    exporter.clear()


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@contextmanager
def serving(app: Any) -> Iterator[TestClient]:
    """``app`` started (its lifespan run) under a ``TestClient``, and stopped afterwards. A
    server error reaches the test as the 500 a client would see, not as the exception."""
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@dataclass(frozen=True)
class Service(Generic[SettingsT]):
    """How a service's tests make its app: its settings for a database and a data directory
    (``settings_for``, which may take settings of the test's besides), its app for those
    settings (``app_for``, with the test's fakes), where its migrations are (for the
    ``migrated`` fixture) and the key that signs the tokens its app trusts (for ``admin`` and
    ``customer``)."""

    settings_for: Callable[..., SettingsT]
    app_for: Callable[[SettingsT], Any]
    migrations: Path | None = None
    key: SigningKey | None = None

    @classmethod
    def standard(
        cls,
        settings_type: Callable[..., SettingsT],
        create_app: Callable[..., Any],
        key: SigningKey,
        *,
        migrations: Path | None = None,
        **defaults: Any,
    ) -> Service[SettingsT]:
        """The usual way: settings of ``settings_type`` on the database and in the data
        directory, logging only warnings, with the service's ``defaults`` and then the test's
        own (``settings_for(url, data_dir, log_level="debug")``); the app is
        ``create_app(settings, verifier=...)``, trusting the tokens ``key`` signs."""

        def settings_for(database_url: str, data_dir: Path, **overrides: Any) -> SettingsT:
            values = {"database_url": database_url, "data_dir": data_dir, "log_level": "warning"}
            return settings_type(**(values | defaults | overrides))

        def app_for(settings: SettingsT) -> Any:
            return create_app(settings, verifier=key.verifier())

        return cls(settings_for, app_for, migrations, key)

    def serving(self, settings: SettingsT) -> AbstractContextManager[TestClient]:
        """The app for ``settings``, running (see :func:`serving`)."""
        return serving(self.app_for(settings))

    def fixture(self) -> Any:
        """The session's ``service`` fixture, which the plugin's ``settings``, ``client``,
        ``shared`` and ``migrated`` ask for, and ``admin`` and ``customer`` (tokens ``key``
        signs): in a service's conftest, ``service = SERVICE.fixture()``."""

        def service() -> Service[SettingsT]:
            return self

        return pytest.fixture(scope="session", name="service")(service)


@pytest.fixture
def settings(service: Service[Any], database_url: str, tmp_path: Path) -> Any:
    return service.settings_for(database_url, tmp_path)


@pytest.fixture
def client(service: Service[Any], settings: Any) -> Iterator[TestClient]:
    """The service's app of the test's own, for tests that change it."""
    with service.serving(settings) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def shared(
    service: Service[Any], module_database_url: str, module_data_dir: Path
) -> Iterator[TestClient]:
    """One app of the service shared by the tests of a module: none may depend on what
    another did to it."""
    with service.serving(service.settings_for(module_database_url, module_data_dir)) as app:
        yield app


@pytest.fixture
def migrated(service: Service[Any], database_url: str) -> str:
    """The test's ``database_url``, its database migrated by the service's migrations."""
    from agora.migrations import upgrade

    if service.migrations is None:
        raise pytest.UsageError("migrated needs the migrations of the conftest's Service")
    upgrade(database_url, service.migrations)
    return database_url


def on_migrated(open_on: Callable[[str], AbstractAsyncContextManager[T]], name: str) -> Any:
    """A test's fixture called ``name``: what ``open_on`` opens over the test's ``migrated``
    database, closed once the test is done. In a conftest that has ``bench_on(url)`` for the
    tests that open a second one: ``bench = on_migrated(bench_on, "bench")``."""

    async def fixture(migrated: str) -> AsyncIterator[T]:
        async with open_on(migrated) as made:
            yield made

    return pytest.fixture(name=name)(fixture)


@pytest.fixture
def signing_key(service: Service[Any]) -> SigningKey:
    """The key that signs the tokens the service's app trusts."""
    if service.key is None:
        raise pytest.UsageError("signing_key needs the key of the conftest's Service")
    return service.key


@pytest.fixture
def admin(signing_key: SigningKey) -> User:
    """A new administrator (a customer too), with a token ``signing_key`` signed."""
    return signing_key.user("admin")


@pytest.fixture
def customer(signing_key: SigningKey) -> User:
    """A new customer, with a token ``signing_key`` signed."""
    return signing_key.user()


def schema_drift_after_migrating(
    database_url: str, migrations: Path, metadata: MetaData
) -> list[Any]:
    """Run the migrations in ``migrations`` on the database at ``database_url`` twice (the
    second run must find it current), then say how its schema differs from the tables the code
    is written against (``metadata``, and the chassis's outbox and inbox): empty when it does
    not. Call it from a synchronous test."""
    from agora.migrations import upgrade
    from agora_tools.testing import schema_drift

    upgrade(database_url, migrations)
    upgrade(database_url, migrations)
    return asyncio.run(schema_drift(database_url, metadata))
