"""The catalog's composition root: the one place that picks the SQL products and the seed file."""

from __future__ import annotations

from pathlib import Path

import structlog
from fastapi import FastAPI

from agora.app import Hook, Migrate, Resources, ServiceDefinition, create_service_app
from agora.auth import TokenVerifier
from catalog import application, domain, entrypoints
from catalog.adapters import SqlProducts, load_seed
from catalog.settings import CatalogSettings

MIGRATIONS = Path(__file__).parent / "migrations"

SERVICE = ServiceDefinition(
    title="Agora catalog",
    description="""Products, categories and prices.

Anyone may list and read products; creating and changing them needs the admin role. Listings
show active products only, page with an opaque cursor, and answer an unknown category with an
empty list.
""",
    routers=[entrypoints.router],
    errors={
        domain.ProductNotFound: 404,
        domain.ProductExists: 409,
        domain.InvalidProduct: 422,
        domain.UnknownCategory: 422,
    },
    migrations=MIGRATIONS,
)

log = structlog.get_logger("catalog")


async def seed_catalogue(resources: Resources) -> None:
    """Load the shipped starting catalogue into an empty database (once, whoever starts first)."""
    assert resources.uow is not None
    seed = load_seed()
    products = resources.get(application.Parts).products
    loaded = await resources.uow.run(application.seed_catalogue, products, seed)
    log.info("seed", name=seed.name, loaded=loaded, products=len(seed.products))


def create_app(
    settings: CatalogSettings | None = None, *, verifier: TokenVerifier | None = None
) -> FastAPI:
    settings = settings or CatalogSettings()
    on_startup: list[Hook] = [seed_catalogue] if settings.seed else []
    app = create_service_app(
        settings,
        SERVICE,
        on_startup=on_startup,
        verifier=verifier,
    )
    app.state.resources.provide(application.Parts(products=SqlProducts()))
    return app


migrate = Migrate(CatalogSettings, MIGRATIONS)
