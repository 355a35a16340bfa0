"""A replica asked to stop (SIGTERM, as a container runtime sends it) goes in order: readiness
turns 503 at once, it serves through a short drain, then refuses new connections while the
requests in flight finish, its consumers ack the message in hand, its relay publishes what is
committed, and it exits 0 within its bound, or anyway past it. A caller whose replica is stopping
is served by another one, and holds the stop against no breaker (ADR 30)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import orjson
import pytest
from aiohttp import web
from fastapi import APIRouter
from fastapi.testclient import TestClient
from nats.js.errors import NotFoundError
from pydantic import BaseModel
from sqlalchemy import Connection

from agora.app import ServiceDefinition, create_service_app
from agora.client import STOPPING_HEADER, BreakerState, ServiceClient
from agora.db import UnitOfWork
from agora.messaging import schema
from agora.messaging.broker import Broker
from agora.messaging.consumer import consumer_name
from agora.messaging.envelope import CloudEvent, stream_name
from agora.messaging.outbox import record
from agora.messaging.relay import Relay, backlog
from agora.messaging.subscriptions import Subscription
from agora.server import STOP_OVERRAN
from agora.settings import ServiceSettings
from agora.tasks import cancel_and_wait
from agora_tools.testing import NatsServer, connected, eventually, free_port, quick_consumers

pytestmark = pytest.mark.timeout(90)

# A generous bound for whatever a test waits on: the machine is shared and may be slow.
PATIENCE = 30.0


def wait_until(check: Callable[[], bool], what: str, within: float = PATIENCE) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} (not within {within} s)")
        time.sleep(0.02)


# -- a service in a process of its own, stopped by a signal -----------------------------------

SERVICE = textwrap.dedent(
    """
    import asyncio
    import sys
    from pathlib import Path
    from typing import ClassVar

    from fastapi import APIRouter

    from agora.app import ServiceDefinition, create_service_app
    from agora.server import GracefulServer, server_config
    from agora.settings import ServiceSettings


    class DemoSettings(ServiceSettings):
        service_name: ClassVar[str] = "demo"
        model_config = ServiceSettings.prefixed("AGORA_DEMO_")


    gates = Path(sys.argv[1])
    router = APIRouter()


    @router.get("/slow")
    async def slow() -> dict[str, str]:
        (gates / "started").touch()
        while not (gates / "finish").exists():
            await asyncio.sleep(0.02)
        return {"finished": "yes"}


    async def on_shutdown(_resources: object) -> None:
        if (gates / "hang-on-shutdown").exists():
            await asyncio.Event().wait()


    settings = DemoSettings()
    app = create_service_app(
        settings,
        ServiceDefinition("Demo", routers=[router]),
        use_database=False,
        on_shutdown=[on_shutdown],
    )
    config = server_config(
        app,
        host="127.0.0.1",
        port=settings.port,
        max_header_bytes=settings.max_header_bytes,
        stop_timeout=settings.stop_timeout,
        stop_drain=settings.stop_drain,
    )
    GracefulServer(
        config,
        stop_timeout=settings.stop_timeout,
        drain=settings.stop_drain,
        on_stop=app.state.resources.stop,
    ).run()
    """
)


class Replica:
    """The demo service in a process of its own, on a free port, with a folder of gates: files
    the test makes to let its slow request finish or its shutdown hang."""

    def __init__(self, tmp_path: Path, *, stop_timeout: float, drain: float) -> None:
        self.gates = tmp_path / "gates"
        self.gates.mkdir()
        script = tmp_path / "service.py"
        script.write_text(SERVICE)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "AGORA_DEMO_PORT": str(self.port),
            "AGORA_DATA_DIR": str(tmp_path / "data"),
            "AGORA_STOP_TIMEOUT": str(stop_timeout),
            "AGORA_STOP_DRAIN": str(drain),
            "AGORA_LOG_LEVEL": "warning",
        }
        self.process = subprocess.Popen(
            [sys.executable, str(script), str(self.gates)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def ready(self) -> bool:
        assert self.process.poll() is None, "the service exited while starting"
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def open_gate(self, name: str) -> None:
        (self.gates / name).touch()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def exit_status(self) -> int:
        return self.process.wait(timeout=PATIENCE)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def start_replica(tmp_path: Path) -> Iterator[Callable[..., Replica]]:
    replicas: list[Replica] = []

    def start(*, stop_timeout: float = 20.0, drain: float = 0.0) -> Replica:
        replica = Replica(tmp_path, stop_timeout=stop_timeout, drain=drain)
        replicas.append(replica)
        wait_until(replica.ready, "the service became ready")
        return replica

    yield start
    for replica in replicas:
        replica.kill()


class InFlight:
    """A request sent from a thread of its own, so the test can act while it is in flight."""

    def __init__(self, url: str) -> None:
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._send, args=(url,), daemon=True)
        self._thread.start()

    def _send(self, url: str) -> None:
        try:
            self.response = httpx.get(url, timeout=PATIENCE * 2)
        except BaseException as error:
            self.error = error

    def result(self) -> httpx.Response:
        self._thread.join(timeout=PATIENCE * 2)
        assert self.error is None, f"the request in flight failed: {self.error!r}"
        assert self.response is not None
        return self.response


def refuses_connections(url: str) -> bool:
    try:
        httpx.get(f"{url}/livez", timeout=2)
    except httpx.ConnectError:
        return True
    except httpx.TransportError:
        # Accepted into the listener's backlog just as the listener closed, and reset with it:
        # the next try is refused outright.
        pass
    return False


def test_a_stopping_replica_leaves_rotation_first_finishes_the_request_in_flight_and_exits_0(
    start_replica: Callable[..., Replica],
) -> None:
    # A drain long enough for the test to see readiness turned while the replica still serves,
    # on a machine busy with other tests too.
    replica = start_replica(drain=5.0)
    slow = InFlight(f"{replica.url}/slow")
    wait_until(lambda: (replica.gates / "started").exists(), "the slow request reached the app")

    replica.stop()

    readiness = httpx.get(f"{replica.url}/readyz", timeout=PATIENCE)
    assert readiness.status_code == 503
    assert readiness.json()["status"] == "stopping"
    # Still serving through the drain, but letting go of each connection after its answer.
    during_drain = httpx.get(f"{replica.url}/livez", timeout=PATIENCE)
    assert during_drain.status_code == 200
    assert during_drain.headers["connection"] == "close"

    wait_until(lambda: refuses_connections(replica.url), "new connections were refused")
    assert slow.response is None, "the slow request ended before it was let finish"
    replica.open_gate("finish")

    answer = slow.result()
    assert answer.status_code == 200
    assert answer.json() == {"finished": "yes"}
    assert replica.exit_status() == 0


def test_a_stop_that_overruns_its_bound_ends_the_process_anyway(
    start_replica: Callable[..., Replica],
) -> None:
    replica = start_replica(stop_timeout=2.0)
    replica.open_gate("hang-on-shutdown")

    replica.stop()

    assert replica.exit_status() == STOP_OVERRAN


# -- in the app: what a stopping replica answers ----------------------------------------------


class DemoSettings(ServiceSettings):
    service_name: ClassVar[str] = "demo"
    model_config = ServiceSettings.prefixed("AGORA_DEMO_")


echo = APIRouter()


@echo.post("/orders")
async def place() -> dict[str, str]:
    return {"placed": "yes"}


def test_after_the_drain_a_stopping_replica_refuses_requests_untouched_with_a_stopping_problem(
    tmp_path: Path,
) -> None:
    app = create_service_app(
        DemoSettings(data_dir=tmp_path, stop_drain=0), ServiceDefinition("Demo", routers=[echo])
    )
    with TestClient(app) as client:
        assert client.post("/orders").status_code == 200
        app.state.resources.stop()

        refused = client.post("/orders")
        readiness = client.get("/readyz")

    assert refused.status_code == 503
    assert refused.json()["type"] == "/problems/stopping"
    assert refused.headers[STOPPING_HEADER] == "1"
    assert refused.headers["connection"] == "close"
    assert readiness.status_code == 503
    assert readiness.json()["reason"] == "stopping"


# -- the caller: another replica serves, no breaker opens -------------------------------------


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[str, str, list[str]]]:
    """Two stand-in replicas of orders: the first is stopping, the second serves; the list
    names the replica of each call."""
    seen: list[str] = []

    async def stopping(_request: web.Request) -> web.Response:
        seen.append("stopping")
        body = {"type": "/problems/stopping", "title": "Stopping", "status": 503}
        return web.Response(
            status=503,
            body=orjson.dumps(body),
            content_type="application/problem+json",
            headers={STOPPING_HEADER: "1", "Connection": "close"},
        )

    async def serving(_request: web.Request) -> web.Response:
        seen.append("serving")
        return web.json_response({"placed": "yes"}, status=201)

    runners: list[web.AppRunner] = []
    urls: list[str] = []
    for handler in (stopping, serving):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        runners.append(runner)
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        urls.append(f"http://127.0.0.1:{port}")
    yield urls[0], urls[1], seen
    for runner in runners:
        await runner.cleanup()


async def test_calls_to_a_stopping_replica_are_served_by_the_other_and_its_breaker_stays_closed(
    replicas: tuple[str, str, list[str]],
) -> None:
    stopping, serving, seen = replicas
    client = ServiceClient(
        {"orders": [stopping, serving]}, backoff=0.001, backoff_max=0.01, failure_threshold=2
    )
    try:
        # More calls than the breaker's threshold, half of them first sent to the stopping one;
        # a POST with no idempotency key too: the stopping replica took nothing of it.
        answers = [await client.request("orders", "POST", "/orders") for _ in range(6)]
        answers += [await client.request("orders", "GET", "/orders/1") for _ in range(6)]
    finally:
        await client.close()

    assert [answer.status for answer in answers] == [201] * 6 + [201] * 6
    assert "stopping" in seen
    assert client.breaker(stopping).state is BreakerState.CLOSED


# -- messaging: the message in hand is acked, the committed events are published --------------

PUBLISHER = "ledger"
SUBJECT = "agora.ledger.events.Noted.v1"


class Noted(BaseModel):
    type: ClassVar[str] = "ledger.Noted.v1"
    note: str


def note_applied(connection: Connection, event: Noted, envelope: CloudEvent) -> None:
    """Applying changes nothing but the inbox the consumer keeps."""


@pytest.fixture
async def broker(nats_server: NatsServer) -> AsyncIterator[Broker]:
    broker = Broker(nats_server.url, name="test", connect_timeout=1.0)
    await connected(broker, within=PATIENCE)
    with contextlib.suppress(NotFoundError):
        await broker.js.delete_stream(stream_name(PUBLISHER))
    await broker.ensure_stream(PUBLISHER)
    yield broker
    await broker.close()


@pytest.fixture
async def uow(tmp_path: Path) -> AsyncIterator[UnitOfWork]:
    uow = UnitOfWork(f"sqlite:///{tmp_path / 'stop.db'}", source=PUBLISHER)

    def create(connection: Connection) -> None:
        schema.metadata.create_all(connection)

    await uow.run(create)
    yield uow
    await uow.dispose()


async def test_a_stopping_consumer_finishes_the_message_in_hand_and_acks_it(
    broker: Broker, uow: UnitOfWork
) -> None:
    service = f"svc{uuid.uuid4().hex[:10]}"
    subscription = Subscription(Noted, note_applied)
    holding, release = asyncio.Event(), asyncio.Event()

    async def hold(_msg: Any) -> None:  # between the commit and the ack
        holding.set()
        await release.wait()

    consumers = quick_consumers(
        service,
        uow,
        broker,
        [subscription],
        ack_wait=PATIENCE,
        after_commit=hold,
    )
    running = asyncio.create_task(consumers.run())
    event = CloudEvent(source=PUBLISHER, type=Noted.type, data={"note": "in hand"})
    await broker.js.publish(SUBJECT, event.to_bytes(), headers={"Nats-Msg-Id": event.id})
    async with asyncio.timeout(PATIENCE):
        await holding.wait()

    stopping = asyncio.create_task(consumers.stop(within=PATIENCE))
    release.set()
    await stopping
    await cancel_and_wait([running])

    async def acked() -> bool:
        info = await broker.js.consumer_info(
            stream_name(PUBLISHER), consumer_name(service, subscription)
        )
        return info.num_ack_pending == 0 and (info.ack_floor.consumer_seq or 0) >= 1

    await eventually(acked, "the message in hand was acked", within=PATIENCE)


async def test_a_stopping_relay_publishes_the_events_already_committed(
    broker: Broker, uow: UnitOfWork
) -> None:
    def commit(connection: Connection) -> None:
        for note in ("first", "second"):
            record(connection, Noted(note=note), aggregate=note)

    await uow.run(commit)
    # Not running: what a stopping process's relay has left when its loop is cancelled.
    relay = Relay(uow, broker, service=PUBLISHER)

    await relay.flush(within=PATIENCE)

    assert await uow.query(backlog) == 0
    info = await broker.js.stream_info(stream_name(PUBLISHER))
    assert info.state.messages == 2
