"""Payments' composition root: the one place that picks the SQL store and the simulated card
processor, and starts the worker that talks to it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from agora.app import Migrate, Resources, ServiceDefinition, create_service_app, with_provided
from agora.auth import TokenVerifier
from payments import application, entrypoints
from payments.adapters import SimulatedProcessor, SqlPayments
from payments.application import Deadline, ProcessorError, ProcessorTimeout, Wakeup
from payments.domain import InvalidCard
from payments.settings import PaymentsSettings

MIGRATIONS = Path(__file__).parent / "migrations"

SERVICE = ServiceDefinition(
    title="Agora payments",
    description="""Payments for orders, a simulated card processor, and a double-entry ledger.

A logged-in user exchanges a card number for a token (`POST /payments/cards`); the checkout then
authorizes, captures, voids and refunds by command, once per order. Customers see their own
payments; the ledger is for admins.
""",
    routers=[entrypoints.router],
    errors={
        InvalidCard: 422,
        ProcessorError: 502,
        ProcessorTimeout: 504,
    },
    migrations=MIGRATIONS,
)


def create_app(
    settings: PaymentsSettings | None = None, *, verifier: TokenVerifier | None = None
) -> FastAPI:
    settings = settings or PaymentsSettings()
    wakeup = Wakeup()
    lease = timedelta(seconds=settings.processor_timeout + settings.lease_margin)

    async def work(resources: Resources) -> None:
        """The worker loop: carries out what the commands left for the processor."""
        assert resources.uow is not None
        parts = resources.get(application.Parts)
        worker = application.worker(
            resources.uow,
            parts,
            lease=lease,
            poll=settings.worker_poll,
            batch=settings.worker_batch,
        )
        await worker.run()

    app = create_service_app(
        settings,
        SERVICE,
        verifier=verifier,
        subscriptions=with_provided(application.Parts, entrypoints.subscriptions),
        background=[work],
    )
    resources: Resources = app.state.resources
    assert resources.uow is not None
    # The simulated processor keeps its records in payments' database: it needs the app's unit
    # of work, so the parts are provided once the app is made.
    processor = SimulatedProcessor(resources.uow, hang=settings.hang)
    resources.provide(
        application.Parts(
            payments=SqlPayments(),
            processor=Deadline(processor, settings.processor_timeout),
            wakeup=wakeup,
        )
    )
    return app


migrate = Migrate(PaymentsSettings, MIGRATIONS)
