"""Payments on a real NATS JetStream: the checkout's commands arrive on payments' command subjects,
the app's own worker calls the processor, and the answers go out on payments' event subjects."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nats
import pytest
from fastapi.testclient import TestClient

from agora.messaging.envelope import CloudEvent, envelope, subject_of
from agora_tools.testing import NatsServer, an_order, wait_for_event
from contracts.base import IntegrationCommand
from contracts.payments import AuthorizePayment, CapturePayment

from .conftest import APPROVED, PROCESSOR_TIMEOUT, a_user, app_for, settings_for

pytestmark = pytest.mark.timeout(60)


async def send(nats_url: str, command: IntegrationCommand, order_id: str) -> None:
    """Publish a command as the checkout's relay does: on the receiver's command subject, with
    the event id for de-duplication."""
    cloud_event = envelope(command, source="orders", subject=order_id)
    connection = await nats.connect(nats_url)
    try:
        await connection.jetstream().publish(
            subject_of(command), cloud_event.to_bytes(), headers={"Nats-Msg-Id": cloud_event.id}
        )
    finally:
        await connection.close()


def answer(nats_url: str, name: str, order_id: str) -> CloudEvent:
    return asyncio.run(
        wait_for_event(
            nats_url,
            f"agora.payments.events.{name}.v1",
            lambda event: event.subject == order_id,
            timeout=15,
        )
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_commands_from_the_broker_are_answered_on_the_broker(
    database_url: str, tmp_path: Path
) -> None:
    with NatsServer(tmp_path / "nats") as broker:
        settings = settings_for(database_url, tmp_path, nats_url=broker.url)
        ada = a_user()
        approved, timing_out = an_order(), an_order()
        with TestClient(app_for(settings), raise_server_exceptions=False) as client:
            cards: dict[str, Any] = {
                number: client.post(
                    "/payments/cards", json={"card_number": number}, headers=ada.headers
                ).json()
                for number in (APPROVED, PROCESSOR_TIMEOUT)
            }
            for order_id, number in ((approved, APPROVED), (timing_out, PROCESSOR_TIMEOUT)):
                command = AuthorizePayment(
                    order_id=order_id,
                    user_id=ada.id,
                    amount=800,
                    currency="EUR",
                    card_token=cards[number]["token"],
                )
                asyncio.run(send(broker.url, command, order_id))

            authorized = answer(broker.url, "PaymentAuthorized", approved)
            failed = answer(broker.url, "PaymentFailed", timing_out)
            asyncio.run(send(broker.url, CapturePayment(order_id=approved), approved))
            captured = answer(broker.url, "PaymentCaptured", approved)

    assert authorized.source == "payments"
    assert authorized.data["card_last4"] == "4242"
    assert failed.data["reason"] == "processor_timeout"
    assert captured.data["amount"] == 800
