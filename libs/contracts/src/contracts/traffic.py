"""Who sends which commands and who consumes what: the broker's permissions come from here.

A module of the package says what a service publishes (its ``EVENTS``) and what it accepts
(its ``COMMANDS``). What it sends to others and what it takes from others is said here, once,
beside them: ``agora up`` gives each service a broker user that may publish exactly its own
events and the commands listed under it in :data:`SENDS`, and consume exactly what is listed
under it in :data:`CONSUMES` (see ``docs/adr/0025-a-broker-user-per-service.md``). A service that
subscribes to something not listed here is refused by the broker.
"""

from __future__ import annotations

from typing import NamedTuple

from contracts import catalog, identity, inventory, orders, payments, publishers, shipping
from contracts.base import IntegrationEvent, subject_of

# What each service subscribes to: other services' events, and the commands it accepts.
CONSUMES: dict[str, tuple[type[IntegrationEvent], ...]] = {
    "inventory": (catalog.ProductCreated, *inventory.COMMANDS),
    "payments": payments.COMMANDS,
    # The checkout listens to every answer of the two services it drives.
    "orders": (*inventory.EVENTS, *payments.EVENTS),
    "cart": (orders.OrderPlaced,),
    "notifications": (
        identity.UserRegistered,
        orders.OrderConfirmed,
        orders.OrderCancelled,
        shipping.ShipmentDispatched,
    ),
    # A shipment per confirmed order, from the version that carries the address.
    "shipping": (orders.OrderConfirmedV2,),
}

# The commands each service sends (the checkout saga's, from orders).
SENDS: dict[str, tuple[type[IntegrationEvent], ...]] = {
    "orders": (*inventory.COMMANDS, *payments.COMMANDS),
}


class Traffic(NamedTuple):
    """The subjects one service may publish to and consume from."""

    publishes: tuple[str, ...]
    consumes: tuple[str, ...]


def traffic() -> dict[str, Traffic]:
    """Every service the contracts know, with its subjects: what it publishes (its own events,
    the commands it sends) and what it consumes."""
    events = {
        service: tuple(message for message in messages if message.kind == "event")
        for service, messages in publishers().items()
    }
    services = sorted({*events, *CONSUMES, *SENDS})
    return {
        service: Traffic(
            publishes=_subjects((*events.get(service, ()), *SENDS.get(service, ()))),
            consumes=_subjects(CONSUMES.get(service, ())),
        )
        for service in services
    }


def _subjects(messages: tuple[type[IntegrationEvent], ...]) -> tuple[str, ...]:
    return tuple(sorted({subject_of(message) for message in messages}))
