"""What inventory listens to, as the broker sees it: one durable consumer per subscription, on
catalog's event subject and on inventory's own command subjects."""

from __future__ import annotations

from datetime import timedelta

from inventory.adapters import SqlStockrooms
from inventory.application import Parts
from inventory.entrypoints import subscriptions


def test_inventory_consumes_new_products_and_the_checkouts_commands() -> None:
    found = subscriptions(Parts(SqlStockrooms(), reservation_ttl=timedelta(minutes=15)))

    assert {s.durable: s.subject for s in found} == {
        "open_stock": "agora.catalog.events.ProductCreated.v1",
        "reserve_stock": "agora.inventory.commands.ReserveStock.v1",
        "release_stock": "agora.inventory.commands.ReleaseStock.v1",
        "commit_stock": "agora.inventory.commands.CommitStock.v1",
    }
