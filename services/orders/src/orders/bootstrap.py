"""The orders service's composition root: the one place that picks the SQL repository and the
clients of catalog, payments and cart, provides them to the routes as ``application.Parts``, and
starts the checkout's deadline timer."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import FastAPI

from agora.app import Migrate, Resources, ServiceDefinition, create_service_app, with_provided
from agora.auth import TokenVerifier
from orders import application, domain, entrypoints
from orders.adapters import HttpCartService, HttpCatalogService, HttpPaymentsService, SqlOrders
from orders.application import TIMER_BATCH, Clock, utc_now
from orders.settings import OrdersSettings

MIGRATIONS = Path(__file__).parent / "migrations"

SERVICE = ServiceDefinition(
    title="Agora orders",
    description="""Orders and the checkout saga.

A logged-in customer places an order from lines (sku, quantity), or from what their cart holds,
with a shipping address and a card number and an `Idempotency-Key` header. Prices come from the
catalogue; the card goes to payments for a token and is never stored. The order starts PENDING
while its checkout reserves the stock, authorizes the payment, then captures it and commits the
stock; it ends CONFIRMED, or CANCELLED with a reason once whatever the checkout took is given back.
Customers see and cancel their own orders (until they are charged) and follow one's status live
(`GET /orders/{id}/events`, server-sent events); admins see every order.
""",
    routers=[entrypoints.router],
    errors={
        domain.OrderNotFound: 404,
        domain.OrderCharged: 409,
        domain.ProductUnavailable: 422,
        domain.MixedCurrencies: 422,
        domain.InvalidCard: 422,
        domain.IdempotencyKeyReused: 422,
        domain.EmptyCart: 422,
        domain.CartNotOrderable: 422,
        domain.CheckoutsBusy: 503,
    },
    migrations=MIGRATIONS,
)


def create_app(
    settings: OrdersSettings | None = None,
    *,
    verifier: TokenVerifier | None = None,
    catalog: application.CatalogService | None = None,
    payments: application.PaymentsService | None = None,
    cart: application.CartService | None = None,
    clock: Clock = utc_now,
) -> FastAPI:
    """The orders app. Tests pass fakes for ``catalog``, ``payments`` and ``cart`` (the other
    services it calls) and, for time to pass, a ``clock``."""
    settings = settings or OrdersSettings()

    async def deadline_timer(resources: Resources) -> None:
        """Every ``timer_interval``, act on the checkouts whose deadline has passed."""
        assert resources.uow is not None
        while True:
            parts = resources.get(application.Parts)
            due = await application.run_due(resources.uow, parts, parts.clock())
            # A full batch means more are waiting: go on at once.
            if due < TIMER_BATCH:
                await asyncio.sleep(settings.timer_interval)

    async def ring_on_commit(resources: Resources) -> None:
        """Wake the status streams when a commit of this process may have changed an order."""
        assert resources.uow is not None
        changes = resources.get(application.Parts).changes
        changes.start()
        resources.uow.after_commit(changes.ring)

    app = create_service_app(
        settings,
        SERVICE,
        verifier=verifier,
        subscriptions=with_provided(application.Parts, entrypoints.subscriptions),
        background=[deadline_timer],
        on_startup=[ring_on_commit],
    )
    resources: Resources = app.state.resources
    resources.provide(
        application.Parts(
            orders=SqlOrders(),
            catalog=catalog or HttpCatalogService(resources.client),
            payments=payments or HttpPaymentsService(resources.client),
            cart=cart or HttpCartService(resources.client),
            rules=settings.rules(),
            clock=clock,
            follow=application.Follow(
                poll=settings.events_poll,
                keepalive=settings.events_keepalive,
                max_seconds=settings.events_max_seconds,
            ),
        )
    )
    return app


migrate = Migrate(OrdersSettings, MIGRATIONS)
