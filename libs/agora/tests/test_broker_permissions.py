"""The broker `agora up` runs takes no connection without a user, and each service's user may
publish only its own events and the commands it sends, and consume only what it consumes (ADR
25). Against a nats-server of this module's own, configured as `agora up` configures it, with
the users and permissions derived from the contracts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
import sqlalchemy
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig
from typer.testing import CliRunner

from agora.db import UnitOfWork
from agora.logs import configure_logging, recent_logs
from agora.messaging.broker import Broker
from agora.messaging.consumer import Consumers, DeadLetterHeaders
from agora.messaging.credentials import NatsCredentials
from agora.messaging.deadletters import dead_letters, replay
from agora.messaging.envelope import CloudEvent, envelope, stream_name, subject_of
from agora.messaging.outbox import record
from agora.messaging.relay import Relay, backlog
from agora.messaging.schema import metadata as messaging_metadata
from agora.messaging.subscriptions import Subscription
from agora.tasks import cancel_and_wait
from agora.topology import GATEWAY, load_topology
from agora_tools import testing
from agora_tools.cli import app
from agora_tools.embedded_nats import NatsSync, embedded_nats, ensure_streams
from agora_tools.runner import OPERATOR, broker_users
from agora_tools.testing import NatsServer, file_mode
from contracts.inventory import ReserveStock, StockLine
from contracts.orders import OrderLine, OrderPlaced
from contracts.payments import AuthorizePayment

pytestmark = pytest.mark.timeout(60)

# Every service the topology declares, one written by `agora new` included.
SERVICES = tuple(load_topology().services)
# Each user's password in this module's broker.
PASSWORDS = {user: f"{user}-secret" for user in (*SERVICES, GATEWAY, OPERATOR)}
# How long a refused request is waited for: the broker answers a refusal with no reply at all.
REFUSED_WAIT = 1.0


def login(user: str) -> NatsCredentials:
    return NatsCredentials(user, PASSWORDS[user])


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    directory = tmp_path_factory.mktemp("nats")
    permissions = broker_users(SERVICES)
    plan = embedded_nats(
        port=0,
        store_dir=directory / "store",
        config_path=directory / "nats.conf",
        sync=NatsSync.DEFAULT,
        users=[
            {"user": user, "password": PASSWORDS[user], **_granted(permissions[user])}
            for user in permissions
        ],
    )
    assert plan.config is not None
    with NatsServer(directory / "store", config=plan.config) as server:
        asyncio.run(ensure_streams(server.url, SERVICES, login(OPERATOR)))
        yield server


def _granted(permissions: Any) -> dict[str, Any]:
    return {"permissions": permissions} if permissions is not None else {}


class Connection:
    """One user's connection, with the errors the broker sent it."""

    def __init__(self, client: Client, errors: list[str]) -> None:
        self.client = client
        self.errors = errors

    async def refused(self, what: str) -> bool:
        """Whether the broker said it refused ``what`` (a subject), waiting a while for it."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            # nats-py gives the broker's error in lower case.
            said = [error.lower() for error in self.errors]
            if any("permissions violation" in e and what.lower() in e for e in said):
                return True
            await asyncio.sleep(0.05)
        return False


@contextlib.asynccontextmanager
async def connected(url: str, user: str) -> AsyncIterator[Connection]:
    errors: list[str] = []

    async def keep(error: Exception) -> None:
        errors.append(str(error))

    client = await nats.connect(
        url, allow_reconnect=False, error_cb=keep, **login(user).connect_options()
    )
    try:
        yield Connection(client, errors)
    finally:
        await client.close()


def order_placed(order_id: str) -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id,
        user_id="user-1",
        lines=(OrderLine(sku="SKU-1", name="Beans", quantity=1, unit_price=900),),
        total=900,
        currency="EUR",
        placed_at=datetime.now(UTC),
    )


def authorize(order_id: str) -> AuthorizePayment:
    return AuthorizePayment(
        order_id=order_id,
        user_id="user-1",
        amount=900,
        currency="EUR",
        card_token="tok_secret_card",
    )


def peek_at_authorizations(service: str) -> ConsumerConfig:
    """A durable consumer of payments' authorisation commands that ``service`` would make for
    itself, which its user may not."""
    return ConsumerConfig(
        name=f"{service}__peek",
        durable_name=f"{service}__peek",
        filter_subject=subject_of(AuthorizePayment),
        ack_policy=AckPolicy.EXPLICIT,
    )


async def stream_messages(url: str, service: str) -> int:
    async with connected(url, OPERATOR) as operator:
        info = await operator.client.jetstream().stream_info(stream_name(service))
        return int(info.state.messages)


async def test_the_broker_refuses_a_connection_without_credentials_or_with_a_wrong_password(
    nats_server: NatsServer,
) -> None:
    for options in ({}, {"user": "payments", "password": "guessed"}):
        with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
            await nats.connect(
                nats_server.url,
                allow_reconnect=False,
                max_reconnect_attempts=0,
                connect_timeout=5,
                **options,
            )


async def test_payments_credential_cannot_publish_an_order_placed_event(
    nats_server: NatsServer,
) -> None:
    subject = subject_of(OrderPlaced)
    before = await stream_messages(nats_server.url, "orders")
    forged = envelope(order_placed("order-forged"), source="orders").to_bytes()

    async with connected(nats_server.url, "payments") as payments:
        with pytest.raises(nats.errors.TimeoutError):
            await payments.client.jetstream().publish(subject, forged, timeout=REFUSED_WAIT)
        assert await payments.refused(subject)

    assert await stream_messages(nats_server.url, "orders") == before


async def test_inventory_credential_cannot_read_the_card_tokens_in_payments_commands(
    nats_server: NatsServer,
) -> None:
    async with connected(nats_server.url, "orders") as orders:
        await orders.client.jetstream().publish(
            subject_of(AuthorizePayment), envelope(authorize("order-1"), source="orders").to_bytes()
        )
    seen: list[bytes] = []

    async def keep(msg: Msg) -> None:
        seen.append(msg.data)

    async with connected(nats_server.url, "inventory") as inventory:
        js = inventory.client.jetstream(timeout=REFUSED_WAIT)
        # A plain subscription to the commands, or to everyone's replies (pulled messages).
        await inventory.client.subscribe("agora.payments.commands.>", cb=keep)
        await inventory.client.subscribe("_INBOX.>", cb=keep)
        assert await inventory.refused("agora.payments.commands.>")
        assert await inventory.refused('"_INBOX.>"')
        # A consumer of its own on payments' stream, or a read of the stream by position.
        with pytest.raises(nats.errors.TimeoutError):
            await js.add_consumer(stream_name("payments"), peek_at_authorizations("inventory"))
        with pytest.raises(nats.errors.TimeoutError):
            await js.get_msg(stream_name("payments"), seq=1)
        # Pulling from payments' own consumer.
        payments_consumer = f"{stream_name('payments')}.payments__authorize_payment"
        with pytest.raises(nats.errors.TimeoutError):
            await inventory.client.request(
                f"$JS.API.CONSUMER.MSG.NEXT.{payments_consumer}", b"1", timeout=REFUSED_WAIT
            )
        assert await inventory.refused("$JS.API.CONSUMER.MSG.NEXT")

    assert not any(b"tok_secret_card" in data for data in seen)


async def test_orders_credential_cannot_consume_what_it_only_sends(
    nats_server: NatsServer,
) -> None:
    # Orders sends payments' commands and consumes payments' events, from the same stream: it
    # may not make a consumer of the commands.
    async with connected(nats_server.url, "orders") as orders:
        with pytest.raises(nats.errors.TimeoutError):
            await orders.client.jetstream(timeout=REFUSED_WAIT).add_consumer(
                stream_name("payments"), peek_at_authorizations("orders")
            )
        assert await orders.refused("$JS.API.CONSUMER.CREATE")


# -- the services' own work, under their users -------------------------------------------------


def create_messaging_tables(connection: sqlalchemy.Connection) -> None:
    messaging_metadata.create_all(connection)


def place(connection: sqlalchemy.Connection, order_id: str) -> None:
    record(connection, order_placed(order_id), aggregate=order_id)
    record(
        connection,
        ReserveStock(order_id=order_id, lines=(StockLine(sku="SKU-1", quantity=1),)),
        aggregate=order_id,
    )


async def service_uow(directory: Path, service: str) -> UnitOfWork:
    uow = UnitOfWork(f"sqlite:///{directory / f'{service}.db'}", source=service)
    await uow.run(create_messaging_tables)
    return uow


async def started(url: str, service: str) -> Broker:
    broker = Broker(url, name=service, credentials=login(service))
    broker.on_connect(lambda: broker.ensure_stream(service))
    return await testing.connected(broker)


async def test_each_service_publishes_and_consumes_its_own_messages_under_its_own_user(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    orders_uow = await service_uow(tmp_path, "orders")
    received: dict[str, list[str]] = {"cart": [], "inventory": []}
    both = asyncio.Event()

    def into(service: str) -> Callable[[sqlalchemy.Connection, Any, CloudEvent], None]:
        def handle(_: sqlalchemy.Connection, event: Any, envelope: CloudEvent) -> None:
            received[service].append(f"{envelope.type}:{event.order_id}")
            if all(received.values()):
                both.set()

        return handle

    brokers = [await started(nats_server.url, name) for name in ("orders", "cart", "inventory")]
    consumers = [
        Consumers(
            service,
            await service_uow(tmp_path, service),
            broker,
            (Subscription(event, into(service), name="permitted"),),
            ack_wait=5.0,
            max_deliver=3,
            backoff=[0.1],
        )
        for service, broker, event in (
            ("cart", brokers[1], OrderPlaced),
            ("inventory", brokers[2], ReserveStock),
        )
    ]
    tasks = [asyncio.create_task(consumer.run()) for consumer in consumers]
    try:
        await orders_uow.run(place, "order-42")
        relay = Relay(orders_uow, brokers[0], service="orders")
        await relay.publish_pending()
        assert await orders_uow.query(backlog) == 0

        await asyncio.wait_for(both.wait(), timeout=30)
        assert received == {
            "cart": ["orders.OrderPlaced.v1:order-42"],
            "inventory": ["inventory.ReserveStock.v1:order-42"],
        }
    finally:
        await cancel_and_wait(tasks)
        for broker in brokers:
            await broker.close()
        await orders_uow.dispose()


async def test_a_subscription_the_contracts_do_not_list_is_refused_and_said_in_the_log(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    # Logged as a process logs (structlog caches its loggers, so a capture set up by the test
    # would miss a logger an earlier test used first); the chassis keeps the lines it wrote.
    configure_logging("inventory")
    broker = await started(nats_server.url, "inventory")
    uow = await service_uow(tmp_path, "inventory")
    applied: list[str] = []

    def peek(_: sqlalchemy.Connection, command: AuthorizePayment, __: CloudEvent) -> None:
        applied.append(command.card_token)

    consumers = Consumers(
        "inventory",
        uow,
        broker,
        (Subscription(AuthorizePayment, peek),),
        ack_wait=5.0,
        max_deliver=3,
        backoff=[0.1],
    )
    task = asyncio.create_task(consumers.run())
    try:
        refused = await said_in("inventory", "the broker refused an operation to this user")
    finally:
        await cancel_and_wait([task])
        await broker.close()
        await uow.dispose()

    assert "agora_payments" in refused["error"]
    assert applied == []


async def said_in(service: str, event: str) -> dict[str, Any]:
    """The newest log line of ``service`` saying ``event``, waiting up to twenty seconds for it."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        lines = recent_logs().find(service=service)
        found = next((line for line in lines if line["event"] == event), None)
        if found is not None:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing said {event!r}: {recent_logs().find(service=service)}")


async def test_the_consoles_user_sees_the_messages_lists_dead_letters_and_replays_them(
    nats_server: NatsServer,
) -> None:
    placed = envelope(order_placed("order-dead"), source="orders")
    async with connected(nats_server.url, "cart") as cart:
        # What cart's consumer does with an event it gave up on.
        await cart.client.jetstream().publish(
            "agora.cart.dead.remove_ordered",
            placed.to_bytes(),
            headers={
                DeadLetterHeaders.EVENT_ID: placed.id,
                DeadLetterHeaders.ORIGINAL_SUBJECT: subject_of(OrderPlaced),
                DeadLetterHeaders.CONSUMER: "cart__remove_ordered",
            },
        )
    replayed_seen = asyncio.Event()

    async def seen(msg: Msg) -> None:
        # The feed of recent messages: the replayed event goes by.
        if msg.subject == subject_of(OrderPlaced) and placed.id.encode() in msg.data:
            replayed_seen.set()

    async with connected(nats_server.url, GATEWAY) as console:
        await console.client.subscribe("agora.>", cb=seen)
        js = console.client.jetstream()
        listed = [letter.id for letter in await dead_letters(js)]
        replayed = await replay(js, placed.id)
        await asyncio.wait_for(replayed_seen.wait(), timeout=10)
        left = [letter.id for letter in await dead_letters(js)]
        assert not console.errors

    assert placed.id in listed
    assert replayed.subject == subject_of(OrderPlaced)
    assert placed.id not in left


def test_the_embedded_broker_configuration_is_readable_by_its_owner_only(
    tmp_path: Path,
) -> None:
    plan = embedded_nats(
        port=0,
        store_dir=tmp_path / "store",
        config_path=tmp_path / "nats.conf",
        sync=NatsSync.DEFAULT,
        users=[{"user": OPERATOR, "password": PASSWORDS[OPERATOR]}],
    )
    assert plan.config is not None
    assert file_mode(plan.config) == 0o600
    assert PASSWORDS[OPERATOR] in plan.config.read_text()


def test_agora_events_logs_in_as_agora_nats_user_says_and_is_refused_without(
    nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no system of agora up's runs here
    monkeypatch.setenv("AGORA_NATS_USER", OPERATOR)
    monkeypatch.setenv("AGORA_NATS_PASSWORD", PASSWORDS[OPERATOR])
    command = ["events", "dead", "--nats-url", nats_server.url, "--json"]

    logged_in = CliRunner().invoke(app, command)
    monkeypatch.delenv("AGORA_NATS_USER")
    anonymous = CliRunner().invoke(app, command)

    assert logged_in.exit_code == 0, logged_in.output
    assert isinstance(json.loads(logged_in.stdout), list)
    assert anonymous.exit_code == 1
    assert "authorization" in anonymous.output.lower()
