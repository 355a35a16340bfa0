"""``GET /api``: the services the topology declares and whether they are serving.

Every replica's ``/readyz`` is asked at once, each with a short timeout, through a service client
that names each replica separately (``catalog#1``), so a slow or dead replica costs one timeout at
most and trips only its own circuit breaker. A service is healthy when at least one replica is
ready: the others are out of rotation, not the service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from agora.client import ServiceClient
from agora.errors import Problem
from agora.topology import Topology
from gateway.settings import GatewaySettings

# How a failed readiness call reads in `GET /api` (the problem's detail would name the address).
_FAILURES = {503: "unreachable", 504: "timed out", 502: "broken answer"}


def replica_key(service: str, replica: int) -> str:
    return f"{service}#{replica}"


def probe_client(settings: GatewaySettings) -> ServiceClient:
    """A client with one entry per replica, so each replica can be asked on its own."""
    return ServiceClient(
        {
            replica_key(name, replica): [url]
            for name, urls in settings.service_urls.items()
            for replica, url in enumerate(urls)
        },
        timeout=settings.health_timeout,
        # One try: a replica that does not answer at once is not ready, and the deadline of
        # `GET /api` is the same for all of them.
        attempts=1,
    )


def health_router(topology: Topology, settings: GatewaySettings, probe: ServiceClient) -> APIRouter:
    router = APIRouter()

    async def replica_status(service: str, replica: int) -> dict[str, Any]:
        status: dict[str, Any] = {"replica": replica, "ready": False}
        try:
            async with asyncio.timeout(settings.health_timeout):
                reply = await probe.request(replica_key(service, replica), "GET", "/readyz")
        except TimeoutError:
            status["error"] = "timed out"
        except Problem as error:
            status["error"] = _FAILURES.get(error.status, error.title.lower())
        else:
            status["ready"] = reply.status == 200
            if not status["ready"]:
                status["error"] = f"answered {reply.status}"
        return status

    async def service_status(name: str, urls: Sequence[str], declared: int) -> dict[str, Any]:
        if not urls:
            return {
                "name": name,
                "replicas": declared,
                "healthy": False,
                "ready_replicas": 0,
                "instances": [],
                "error": "no address known",
            }
        instances = await asyncio.gather(*(replica_status(name, i) for i in range(len(urls))))
        ready = sum(1 for instance in instances if instance["ready"])
        return {
            "name": name,
            "replicas": len(urls),
            "healthy": ready > 0,
            "ready_replicas": ready,
            "instances": instances,
        }

    @router.get(
        "/api",
        summary="The services behind the gateway and their health",
        response_description="`{services: [{name, replicas, healthy, ...}]}`",
    )
    async def services() -> Response:
        urls: Mapping[str, list[str]] = settings.service_urls
        statuses = await asyncio.gather(
            *(service_status(s.name, urls.get(s.name, []), s.replicas) for s in topology)
        )
        itself = {
            "name": settings.service_name,
            "replicas": 1,
            "healthy": True,
            "ready_replicas": 1,
            "instances": [{"replica": settings.replica, "ready": True}],
        }
        return JSONResponse({"services": [itself, *statuses]})

    return router
