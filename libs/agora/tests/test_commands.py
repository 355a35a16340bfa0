"""A command is sent like an event, from the sender's outbox, but travels on its receiver's
command subject and is kept in the receiver's stream, even when the receiver has never run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import BaseModel
from sqlalchemy import Column, Connection, MetaData, String, Table, func, insert, select

from agora.db import UnitOfWork
from agora.messaging.broker import Broker
from agora.messaging.consumer import Consumers
from agora.messaging.envelope import CloudEvent, stream_name, subject_of
from agora.messaging.outbox import record
from agora.messaging.relay import Relay, backlog
from agora.messaging.schema import metadata as messaging_metadata
from agora.messaging.subscriptions import Subscription
from agora_tools.testing import InMemoryBus, NatsServer

pytestmark = pytest.mark.timeout(60)


class ShipParcel(BaseModel):
    """A command the (made-up) warehouse accepts."""

    type: ClassVar[str] = "warehouse.ShipParcel.v1"
    kind: ClassVar[str] = "command"
    parcel: str


class ParcelPacked(BaseModel):
    type: ClassVar[str] = "packing.ParcelPacked.v1"
    parcel: str


shipments_metadata = MetaData()
shipments = Table("shipments", shipments_metadata, Column("parcel", String(40), primary_key=True))


def ship(connection: Connection, command: ShipParcel, envelope: CloudEvent) -> None:
    connection.execute(insert(shipments).values(parcel=command.parcel))


def ask_to_ship(connection: Connection, parcel: str) -> None:
    record(connection, ShipParcel(parcel=parcel), aggregate=parcel)


def shipped(connection: Connection) -> int:
    return int(connection.execute(select(func.count()).select_from(shipments)).scalar_one())


def create_all(connection: Connection, schema: MetaData) -> None:
    schema.create_all(connection)


async def until(done: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await done():
            return
        await asyncio.sleep(0.05)


def test_a_command_goes_to_its_receivers_subject_and_an_event_to_its_publishers() -> None:
    assert subject_of(ShipParcel) == "agora.warehouse.commands.ShipParcel.v1"
    assert subject_of(ShipParcel(parcel="p-1")) == "agora.warehouse.commands.ShipParcel.v1"
    assert subject_of(ParcelPacked) == "agora.packing.events.ParcelPacked.v1"
    assert Subscription(ShipParcel, ship).subject == "agora.warehouse.commands.ShipParcel.v1"


async def test_the_in_memory_bus_delivers_a_command_from_the_senders_outbox(
    tmp_path: Path,
) -> None:
    sender = UnitOfWork(f"sqlite:///{tmp_path / 'packing.db'}", source="packing")
    receiver = UnitOfWork(f"sqlite:///{tmp_path / 'warehouse.db'}", source="warehouse")
    await sender.run(create_all, messaging_metadata)
    for schema in (messaging_metadata, shipments_metadata):
        await receiver.run(create_all, schema)
    bus = InMemoryBus([Subscription(ShipParcel, ship)], receiver)

    await sender.run(ask_to_ship, "p-7")
    deliveries = await bus.relay(sender)

    assert [d.handled for d in deliveries] == [("warehouse__ship",)]
    assert await receiver.query(shipped) == 1
    await sender.dispose()
    await receiver.dispose()


async def test_a_command_sent_before_its_receiver_ever_ran_waits_in_the_receivers_stream(
    tmp_path: Path,
) -> None:
    nats = NatsServer(tmp_path / "nats").start()
    sender = UnitOfWork(f"sqlite:///{tmp_path / 'packing.db'}", source="packing")
    receiver = UnitOfWork(f"sqlite:///{tmp_path / 'warehouse.db'}", source="warehouse")
    await sender.run(create_all, messaging_metadata)
    for schema in (messaging_metadata, shipments_metadata):
        await receiver.run(create_all, schema)
    brokers = [Broker(nats.url, name="packing-0"), Broker(nats.url, name="warehouse-0")]
    tasks: list[asyncio.Task[None]] = []
    try:
        # Only the sender's own stream exists: nobody has made the warehouse's yet.
        brokers[0].on_connect(lambda: brokers[0].ensure_stream("packing"))
        await brokers[0].start()
        relay = Relay(sender, brokers[0], service="packing", idle_poll=0.1)
        tasks.append(asyncio.create_task(relay.run()))
        for n in range(5):
            await sender.run(ask_to_ship, f"p-{n}")
        await until(lambda: _none_left(sender))
        assert await sender.query(backlog) == 0
        info = await brokers[0].js.stream_info(stream_name("warehouse"))
        assert info.state.messages == 5

        # The warehouse starts later and takes every command waiting for it, once each.
        await brokers[1].start()
        consumers = Consumers(
            "warehouse",
            receiver,
            brokers[1],
            [Subscription(ShipParcel, ship)],
            ack_wait=2.0,
            max_deliver=5,
            backoff=[0.1],
        )
        tasks.append(asyncio.create_task(consumers.run()))
        await until(lambda: _all_shipped(receiver, 5))
        assert await receiver.query(shipped) == 5
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for broker in brokers:
            await broker.close()
        await sender.dispose()
        await receiver.dispose()
        nats.kill()


async def _none_left(uow: UnitOfWork) -> bool:
    return await uow.query(backlog) == 0


async def _all_shipped(uow: UnitOfWork, count: int) -> bool:
    return await uow.query(shipped) >= count
