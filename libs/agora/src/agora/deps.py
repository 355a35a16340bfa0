"""FastAPI dependencies with readable aliases, for a service's entry points.

``Uow``, ``Client``, ``CurrentUser`` and ``Admin`` are what a route asks for; tests replace what
stands behind them through ``bootstrap``, not by patching. A route that other services call on
nobody's behalf asks for ``CallingService`` (a known service's own credential) or
``UserOrService`` (that, or a user's token); see ADR 24.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Request

from agora import context
from agora.app import Resources
from agora.auth import Principal, ServiceCaller, is_service_credential
from agora.client import ServiceClient
from agora.db import UnitOfWork
from agora.errors import Forbidden, ServiceUnavailable, Unauthorized

T = TypeVar("T")

# Dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in a worker
# thread, a hop that costs more than the whole lookup.


def _resources(request: Request) -> Resources:
    found: Resources = request.app.state.resources
    return found


async def resources(request: Request) -> Resources:
    return _resources(request)


def provided(kind: type[T]) -> Callable[[Request], Awaitable[T]]:
    """The dependency that answers what bootstrap provided of class ``kind`` (see
    ``Resources.provide``), given a readable alias once in the entry points::

        Parts = Annotated[application.Parts, Depends(provided(application.Parts))]
    """

    async def lookup(request: Request) -> T:
        return _resources(request).get(kind)

    lookup.__name__ = f"provided_{kind.__name__}"
    return lookup


async def unit_of_work(request: Request) -> UnitOfWork:
    uow = _resources(request).uow
    if uow is None:
        raise ServiceUnavailable("this service has no database")
    return uow


async def service_client(request: Request) -> ServiceClient:
    return _resources(request).client


async def current_user(request: Request) -> Principal:
    token = context.bearer_token.get()
    if not token:
        raise Unauthorized("send an access token: Authorization: Bearer <token>")
    verifier = _resources(request).verifier
    if verifier is None:
        raise ServiceUnavailable("this service cannot check tokens: it has no key source")
    return await verifier.verify(token)


async def admin(user: Annotated[Principal, Depends(current_user)]) -> Principal:
    if not user.is_admin:
        raise Forbidden("this needs the admin role")
    return user


async def calling_service(request: Request) -> ServiceCaller:
    """The service calling, proved by its own credential; anything else is a 401."""
    token = context.bearer_token.get()
    caller = _resources(request).credentials.caller(token) if token else None
    if caller is None:
        raise Unauthorized("this is for services: send the calling service's own credential")
    return caller


async def user_or_service(request: Request) -> Principal | ServiceCaller:
    """A user's valid token, or a known service's own credential."""
    token = context.bearer_token.get()
    if token and is_service_credential(token):
        return await calling_service(request)
    return await current_user(request)


Uow = Annotated[UnitOfWork, Depends(unit_of_work)]
Client = Annotated[ServiceClient, Depends(service_client)]
CurrentUser = Annotated[Principal, Depends(current_user)]
Admin = Annotated[Principal, Depends(admin)]
CallingService = Annotated[ServiceCaller, Depends(calling_service)]
UserOrService = Annotated[Principal | ServiceCaller, Depends(user_or_service)]
