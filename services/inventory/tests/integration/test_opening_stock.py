"""Opening stock: every SKU of the seed catalogue has its units before the app serves; a product
created later in catalog opens at zero; neither overwrites the other, whichever comes first."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient

from agora_tools.testing import User, started_together
from contracts.catalog import ProductCreated
from inventory.settings import InventorySettings

from .conftest import OPENING, Replica, act, app_for

KNIFE = "KIT-CHEF-KNIFE-20"


def product_created(sku: str) -> ProductCreated:
    now = datetime.now(UTC)
    return ProductCreated(
        sku=sku,
        name="Carbon Steel Wok 32 cm",
        description="Hand-hammered.",
        price=5490,
        currency="EUR",
        category="kitchen",
        active=True,
        created_at=now,
        updated_at=now,
    )


def announce(database_url: str, *skus: str) -> None:
    """Deliver catalog's ProductCreated for ``skus`` to inventory, as its consumer would."""

    async def deliver(replica: Replica) -> None:
        for sku in skus:
            await replica.bus.publish(product_created(sku), aggregate=sku)

    act(database_url, deliver)


def stock_rows(client: TestClient, admin: User) -> dict[str, dict[str, int]]:
    answer = client.get("/inventory/stock", params={"limit": 500}, headers=admin.headers)
    assert answer.status_code == 200, answer.text
    return {row["sku"]: row for row in answer.json()["items"]}


def test_every_seeded_sku_has_its_opening_stock_as_soon_as_the_app_serves(
    client: TestClient, admin: User
) -> None:
    rows = stock_rows(client, admin)

    assert set(rows) == set(OPENING)
    for sku, quantity in OPENING.items():
        assert rows[sku] == {
            "sku": sku,
            "on_hand": quantity,
            "reserved": 0,
            "available": quantity,
            "seeded": quantity,
            "adjusted": 0,
        }
    assert client.get(f"/inventory/stock/{KNIFE}").json() == {
        "sku": KNIFE,
        "available": OPENING[KNIFE],
    }


def test_a_product_created_later_opens_at_zero_and_a_seeded_one_keeps_its_stock(
    client: TestClient, settings: InventorySettings, admin: User
) -> None:
    assert client.get("/inventory/stock/KIT-WOK-32").status_code == 404

    announce(settings.database_url, "KIT-WOK-32", KNIFE)

    assert client.get("/inventory/stock/KIT-WOK-32").json() == {"sku": "KIT-WOK-32", "available": 0}
    rows = stock_rows(client, admin)
    assert rows["KIT-WOK-32"]["seeded"] == 0
    assert rows[KNIFE]["on_hand"] == OPENING[KNIFE]


def test_a_seeded_product_announced_before_the_seed_still_gets_its_opening_stock(
    settings: InventorySettings, admin: User
) -> None:
    with TestClient(app_for(settings.model_copy(update={"seed": False}))) as first:
        announce(settings.database_url, KNIFE)
        assert first.get(f"/inventory/stock/{KNIFE}").json()["available"] == 0

    with TestClient(app_for(settings)) as second:
        rows = stock_rows(second, admin)

    assert rows[KNIFE]["on_hand"] == rows[KNIFE]["seeded"] == OPENING[KNIFE]
    assert len(rows) == len(OPENING)


def test_a_restart_keeps_what_was_sold_and_adjusted(
    settings: InventorySettings, admin: User
) -> None:
    with TestClient(app_for(settings)) as first:
        answer = first.post(
            f"/inventory/stock/{KNIFE}/adjustments",
            json={"delta": -3, "reason": "broken in transit"},
            headers=admin.headers,
        )
        assert answer.status_code == 200

    with TestClient(app_for(settings)) as second:
        row = stock_rows(second, admin)[KNIFE]

    assert (row["on_hand"], row["seeded"], row["adjusted"]) == (
        OPENING[KNIFE] - 3,
        OPENING[KNIFE],
        -3,
    )


def test_two_replicas_starting_together_give_the_opening_stock_once(
    settings: InventorySettings, admin: User
) -> None:
    with started_together([app_for(settings), app_for(settings)]) as clients:
        for client in clients:
            rows = stock_rows(client, admin)
            assert {sku: row["on_hand"] for sku, row in rows.items()} == OPENING
