"""With Redis as the store: a cart is one hash under the service's key prefix, Redis is part of
readiness, and a Redis that does not answer is a 503, never a 500."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest.mock import Mock

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection

from agora.errors import ServiceUnavailable
from agora.messaging.envelope import envelope
from agora_tools.testing import assert_problem, database, free_port
from cart.settings import CartSettings

from .conftest import (
    PRESS,
    WOK,
    Clock,
    FakeCatalogue,
    Shop,
    app_for,
    order_placed,
    redis_keys,
    running_shop,
)

SET = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture
def redis_shop(tmp_path: Path) -> Iterator[Shop]:
    with running_shop("redis", tmp_path) as shop:
        yield shop


@pytest.fixture
def unreachable(tmp_path: Path) -> Iterator[Shop]:
    """A cart whose Redis does not answer (nothing listens on its port)."""
    with database("sqlite", "cart", tmp_path) as url:
        settings = CartSettings(
            database_url=url,
            data_dir=tmp_path,
            log_level="warning",
            redis_url=f"redis://127.0.0.1:{free_port()}/0",
        )
        catalogue, clock = FakeCatalogue(), Clock()
        app = app_for(settings, catalogue, clock)
        with TestClient(app, raise_server_exceptions=False) as client:
            yield Shop(client, settings, catalogue, clock)


def test_a_cart_is_one_hash_per_user_under_the_prefix(redis_shop: Shop) -> None:
    alice, bob = redis_shop.shopper(), redis_shop.shopper()
    redis_shop.clock.now = SET
    alice.put(WOK, 2)
    alice.put(PRESS, 1)
    bob.put(WOK, 1)
    bob.empty()

    keys = redis_keys(redis_shop.settings.redis_prefix)

    assert set(keys) == {f"{redis_shop.settings.redis_prefix}cart:{alice.id}"}
    (cart,) = keys.values()
    assert {sku: json.loads(line) for sku, line in cart.items()} == {
        WOK: {"quantity": 2, "updated_at": "2026-11-24T12:00:00+00:00"},
        PRESS: {"quantity": 1, "updated_at": "2026-11-24T12:00:00+00:00"},
    }


def test_redis_is_part_of_readiness(redis_shop: Shop) -> None:
    answer = redis_shop.client.get("/readyz")

    assert answer.status_code == 200
    assert answer.json()["checks"]["redis"] == {"ok": True}


def test_a_redis_that_does_not_answer_is_a_503_and_the_cart_is_not_ready(
    unreachable: Shop,
) -> None:
    alice = unreachable.shopper()

    answers = [alice.cart(), alice.put(WOK, 1), alice.remove(WOK), alice.empty()]
    ready = unreachable.client.get("/readyz")

    for answer in answers:
        assert_problem(answer, 503)
        assert "Redis" in answer.json()["detail"]
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"]["ok"] is False
    assert ready.json()["checks"]["database"] == {"ok": True}


def test_an_order_redis_cannot_take_is_refused_so_that_the_broker_delivers_it_again(
    unreachable: Shop,
) -> None:
    order = order_placed(str(uuid.uuid4()), WOK, placed_at=SET)
    event = envelope(order, source="orders", subject=order.order_id)

    for _ in range(2):
        # Refused each time: the first failure left nothing in the inbox to skip it by.
        with pytest.raises(ServiceUnavailable):
            unreachable.deliver(event)


def test_a_line_set_again_between_reading_and_dropping_it_stays(redis_shop: Shop) -> None:
    """What makes the consumer safe beside the routes: Redis takes no lock while the handler
    decides, so a line goes only if it still holds what the handler read."""
    alice = redis_shop.shopper()
    connection = Mock(
        spec_set=Connection
    )  # Redis keeps the lines; the inbox's connection is not used
    redis_shop.clock.now = SET
    alice.put(WOK, 2)
    alice.put(PRESS, 1)
    held = redis_shop.store.held(connection, alice.id, [WOK, PRESS])
    redis_shop.clock.now = SET + timedelta(seconds=1)
    alice.put(WOK, 3)

    redis_shop.store.drop(connection, alice.id, held)

    assert alice.lines() == {WOK: 3}
