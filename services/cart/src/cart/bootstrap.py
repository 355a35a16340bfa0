"""The cart service's composition root: the one place that picks where the carts live (the
service's database, or Redis when one is set) and the client of the catalog service."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from agora.app import (
    Check,
    Migrate,
    Resources,
    ServiceDefinition,
    create_service_app,
    with_provided,
)
from agora.auth import TokenVerifier
from cart import application, domain, entrypoints
from cart.adapters import HttpCatalogService, RedisCarts, SqlCarts
from cart.application import Clock, utc_now
from cart.settings import CartSettings

MIGRATIONS = Path(__file__).parent / "migrations"

SERVICE = ServiceDefinition(
    title="Agora cart",
    description="""One open cart per user, priced from the catalogue each time it is shown.

A logged-in customer sets how many units of a product their cart holds, removes lines, empties
it, and sees it with today's names and prices. Placing an order takes the ordered products out of
the cart (orders' `OrderPlaced`), but not one the customer set again after placing it.
""",
    routers=[entrypoints.router],
    errors={
        domain.ProductNotFound: 404,
        domain.InvalidSku: 422,
        domain.InvalidQuantity: 422,
        domain.ProductUnavailable: 422,
        domain.MixedCurrencies: 422,
        domain.TooManyLines: 422,
    },
    # The database is there with either store: it keeps the inbox of OrderPlaced.
    migrations=MIGRATIONS,
)


def create_app(
    settings: CartSettings | None = None,
    *,
    verifier: TokenVerifier | None = None,
    catalog: application.CatalogService | None = None,
    clock: Clock = utc_now,
) -> FastAPI:
    """The cart app. Tests pass a fake ``catalog`` (the catalog service) and, to say when
    lines are set, a ``clock``."""
    settings = settings or CartSettings()
    carts: SqlCarts | RedisCarts
    readiness: dict[str, Check] = {}
    if settings.redis_url:
        carts = RedisCarts(
            settings.redis_url, prefix=settings.redis_prefix, timeout=settings.redis_timeout
        )
        readiness["redis"] = carts.ping
    else:
        carts = SqlCarts()
    app = create_service_app(
        settings,
        SERVICE,
        on_startup=[carts.start],
        on_shutdown=[carts.close],
        readiness=readiness,
        verifier=verifier,
        subscriptions=with_provided(application.Parts, entrypoints.subscriptions),
    )
    resources: Resources = app.state.resources
    resources.provide(
        application.Parts(
            carts=carts,
            catalog=catalog or HttpCatalogService(resources.client),
            currency=settings.currency,
            clock=clock,
        )
    )
    return app


migrate = Migrate(CartSettings, MIGRATIONS)
