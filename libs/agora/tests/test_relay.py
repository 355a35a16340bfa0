"""The relay's gauges, which the outbox alert reads (ADR 34): how many events wait, and when the
oldest of them was recorded; with nothing waiting, the time of the relay's last look, so that
``time() - oldest`` grows only while the relay cannot publish."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel
from sqlalchemy.orm import Session

from agora.db import UnitOfWork
from agora.messaging.broker import Broker, BrokerUnavailable
from agora.messaging.outbox import record
from agora.messaging.relay import Relay
from agora.messaging.schema import metadata
from agora_tools.testing import NatsServer, connected

pytestmark = pytest.mark.timeout(60)

# A service name of these tests' own: the gauges are the process's, labelled by service.
SERVICE = "relay-gauges"


class Noted(BaseModel):
    type: ClassVar[str] = "ledger.Noted.v1"
    n: int


def note(session: Session, n: int) -> None:
    record(session, Noted(n=n), aggregate=f"account-{n}")


def create_all(session: Session) -> None:
    metadata.create_all(session.connection())


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"service": SERVICE})


def waiting() -> float | None:
    return gauge("agora_outbox_pending")


def oldest() -> float | None:
    return gauge("agora_outbox_oldest_pending_timestamp_seconds")


@pytest.fixture
async def uow(tmp_path: Path) -> AsyncIterator[UnitOfWork]:
    uow = UnitOfWork(f"sqlite:///{tmp_path / 'ledger.db'}", source="ledger")
    await uow.run(create_all)
    yield uow
    await uow.dispose()


async def test_the_backlog_gauges_grow_while_the_broker_is_away_and_settle_once_it_is_back(
    uow: UnitOfWork, tmp_path: Path
) -> None:
    nats = NatsServer(tmp_path / "nats")  # not started: the broker is away
    broker = Broker(nats.url, name="ledger")
    broker.on_connect(lambda: broker.ensure_stream("ledger"))
    await broker.start()
    # A batch of two: five waiting events take a count beyond the rows the relay read.
    relay = Relay(uow, broker, service=SERVICE, batch=2)
    try:
        before = time.time()
        for n in range(3):
            await uow.run(note, n)
        with pytest.raises(BrokerUnavailable):
            await relay.publish_pending()
        first_recorded = oldest()
        assert waiting() == 3
        assert first_recorded is not None
        assert before <= first_recorded <= time.time()

        for n in range(3, 5):
            await uow.run(note, n)
        with pytest.raises(BrokerUnavailable):
            await relay.publish_pending()
        assert waiting() == 5
        assert oldest() == first_recorded, "the oldest waiting event is still the first"

        nats.start()
        await connected(broker, within=20)
        while await relay.publish_pending():
            pass  # a full batch: there may be more
        looked = time.time()
        await relay.publish_pending()  # the look that finds nothing waiting

        assert waiting() == 0
        found = oldest()
        assert found is not None
        assert looked <= found <= time.time()
    finally:
        await broker.close()
        nats.kill()
