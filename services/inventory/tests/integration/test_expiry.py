"""The running service gives back the units of a reservation nobody committed in time, and says so
with StockReleased (reason ``expired``)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from agora_tools.testing import outbox_events
from inventory.settings import InventorySettings

from .conftest import OPENING, Replica, act, app_for, kinds

pytestmark = pytest.mark.timeout(60)

KNIFE = "KIT-CHEF-KNIFE-20"


def test_a_reservation_not_committed_in_time_is_released_by_the_service(
    settings: InventorySettings,
) -> None:
    # The app's timer looks often; the reservation (made by a replica of its own here) is short.
    quick = settings.model_copy(update={"expiry_interval": 0.05})

    async def hold(replica: Replica) -> None:
        await replica.reserve("order-1", KIT_CHEF_KNIFE_20=3)

    with TestClient(app_for(quick)) as client:
        act(settings.database_url, hold, ttl=timedelta(seconds=0.2))
        # Wait for the service's timer, however slow the machine: what is asserted is the end
        # state, not how soon it came.
        deadline = time.monotonic() + 30
        while kinds(outbox_events(settings.database_url))[-1:] != ["StockReleased"]:
            assert time.monotonic() < deadline, "the reservation was never released"
            time.sleep(0.05)

        released = outbox_events(settings.database_url)[-1]
        assert released.subject == "order-1"
        assert released.data["reason"] == "expired"
        assert released.data["lines"] == [{"sku": KNIFE, "quantity": 3}]
        assert client.get(f"/inventory/stock/{KNIFE}").json()["available"] == OPENING[KNIFE]
