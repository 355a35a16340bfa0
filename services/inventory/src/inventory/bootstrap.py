"""Inventory's composition root: the one place that picks the SQL stockrooms and the opening
stock."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import structlog
from fastapi import FastAPI

from agora.app import Hook, Migrate, Resources, ServiceDefinition, create_service_app, with_provided
from agora.auth import TokenVerifier
from inventory import application, domain, entrypoints
from inventory.adapters import SqlStockrooms, load_seed
from inventory.settings import InventorySettings

MIGRATIONS = Path(__file__).parent / "migrations"

SERVICE = ServiceDefinition(
    title="Agora inventory",
    description="""Stock per SKU and the reservations of orders.

Anyone may ask how many units of a SKU are available; adjusting stock and listing stock rows
and reservations needs the admin role. The checkout reserves, releases and commits stock with
commands (ReserveStock, ReleaseStock, CommitStock) and gets its answers as events.
""",
    routers=[entrypoints.router],
    errors={
        domain.UnknownSku: 404,
        domain.NotEnoughStock: 409,
        domain.InvalidAdjustment: 422,
        domain.IdempotencyKeyReused: 422,
    },
    migrations=MIGRATIONS,
)

log = structlog.get_logger("inventory")


async def seed_stock(resources: Resources) -> None:
    """Give the seed catalogue's SKUs their opening stock, before the service consumes or serves."""
    assert resources.uow is not None
    seed = load_seed()
    stockrooms = resources.get(application.Parts).stockrooms
    opened = await resources.uow.run(application.seed_stock, stockrooms, seed)
    log.info("seed", name=seed.name, opened=opened, skus=len(seed.quantities))


def create_app(
    settings: InventorySettings | None = None, *, verifier: TokenVerifier | None = None
) -> FastAPI:
    settings = settings or InventorySettings()
    parts = application.Parts(
        stockrooms=SqlStockrooms(), reservation_ttl=timedelta(seconds=settings.reservation_ttl)
    )
    on_startup: list[Hook] = [seed_stock] if settings.seed else []
    app = create_service_app(
        settings,
        SERVICE,
        on_startup=on_startup,
        verifier=verifier,
        subscriptions=with_provided(application.Parts, entrypoints.subscriptions),
        background=[
            entrypoints.expiry(
                parts, interval=settings.expiry_interval, batch=settings.expiry_batch
            )
        ],
    )
    app.state.resources.provide(parts)
    return app


migrate = Migrate(InventorySettings, MIGRATIONS)
