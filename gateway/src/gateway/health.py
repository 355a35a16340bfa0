"""``GET /api``: the services the topology declares and whether they are serving.

Every replica's ``/readyz`` is asked at once, each with a short timeout, through a service client
that names each replica separately (``catalog#1``), so a slow or dead replica costs one timeout at
most and trips only its own circuit breaker. A service is healthy when at least one replica is
ready: the others are out of rotation, not the service.

The broker is reported on its own (``broker``: its address and whether the gateway is connected
to it), and each replica says whether it is connected to it (``instances[].broker``, from its
``/readyz``): a service whose broker is away keeps serving, so that does not make it unhealthy.
So is the Redis that holds the rate limits (``redis``), when one is set: while it is away, each
gateway process limits on its own, and the gateway stays healthy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from agora.app import Resources
from agora.client import Reply, ServiceClient
from agora.deps import provided
from agora.errors import Problem
from agora.messaging.credentials import without_credentials
from agora.topology import Topology
from gateway.ratelimit import RedisBuckets
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
        # Its calls are the gateway's: the service map shows them as gateway -> service.
        service=settings.service_name,
    )


@dataclass(frozen=True, slots=True)
class Probes:
    """What ``GET /api`` asks: every replica of the topology's services through ``client`` (see
    :func:`probe_client`), and the Redis of the shared rate limit when there is one."""

    topology: Topology
    settings: GatewaySettings
    client: ServiceClient
    redis: RedisBuckets | None = None


ProbesDep = Annotated[Probes, Depends(provided(Probes))]

router = APIRouter()


@router.get(
    "/api",
    summary="The services behind the gateway and their health",
    response_description="`{services: [{name, replicas, healthy, ...}]}`",
)
async def services(request: Request, probes: ProbesDep) -> Response:
    settings = probes.settings
    urls: Mapping[str, list[str]] = settings.service_urls
    broker, redis_state, *statuses = await asyncio.gather(
        _gateway_broker(probes, request.app.state.resources),
        _gateway_redis(probes),
        *(
            _service_status(probes, s.name, urls.get(s.name, []), s.replicas)
            for s in probes.topology
        ),
    )
    itself = {
        "name": settings.service_name,
        "replicas": 1,
        "healthy": True,
        "ready_replicas": 1,
        "instances": [{"replica": settings.replica, "ready": True}],
    }
    return JSONResponse({"services": [itself, *statuses], "broker": broker, "redis": redis_state})


async def _replica_status(probes: Probes, service: str, replica: int) -> dict[str, Any]:
    status: dict[str, Any] = {"replica": replica, "ready": False}
    try:
        async with asyncio.timeout(probes.settings.health_timeout):
            reply = await probes.client.request(replica_key(service, replica), "GET", "/readyz")
    except TimeoutError:
        status["error"] = "timed out"
    except Problem as error:
        status["error"] = _FAILURES.get(error.status, error.title.lower())
    else:
        status["ready"] = reply.status == 200
        if not status["ready"]:
            status["error"] = f"answered {reply.status}"
        body = _body(reply)
        if (broker := _broker_check(body)) is not None:
            status["broker"] = broker
        if isinstance(version := body.get("version"), str):
            status["version"] = version
    return status


async def _connection(
    probes: Probes, url: str, check: Callable[[], Awaitable[None]]
) -> dict[str, Any]:
    state: dict[str, Any] = {"url": without_credentials(url), "connected": True}
    try:
        async with asyncio.timeout(probes.settings.health_timeout):
            await check()
    except Exception as error:  # whatever the reason, the answer is "not connected", and why
        state.update(connected=False, error=str(error) or type(error).__name__)
    return state


async def _gateway_broker(probes: Probes, resources: Resources) -> dict[str, Any]:
    broker = resources.broker
    if broker is None:
        return {"url": None, "connected": False, "error": "no broker configured"}
    return await _connection(probes, broker.url, broker.check)


async def _gateway_redis(probes: Probes) -> dict[str, Any]:
    if probes.redis is None:
        error = "no redis configured: each gateway process keeps its own rate limits"
        return {"url": None, "connected": False, "error": error}
    return await _connection(probes, probes.redis.url, probes.redis.check)


async def _service_status(
    probes: Probes, name: str, urls: Sequence[str], declared: int
) -> dict[str, Any]:
    if not urls:
        return {
            "name": name,
            "replicas": declared,
            "healthy": False,
            "ready_replicas": 0,
            "instances": [],
            "error": "no address known",
        }
    instances = await asyncio.gather(*(_replica_status(probes, name, i) for i in range(len(urls))))
    ready = sum(1 for instance in instances if instance["ready"])
    return {
        "name": name,
        "replicas": len(urls),
        "healthy": ready > 0,
        "ready_replicas": ready,
        "instances": instances,
    }


def _body(reply: Reply) -> dict[str, Any]:
    """A ``/readyz`` answer's JSON object, read once: it says the replica's broker and its
    version (what a rollout is checked by); anything else reads as an empty one."""
    try:
        body = reply.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _broker_check(body: dict[str, Any]) -> dict[str, Any] | None:
    """The ``checks.broker`` of a ``/readyz`` body (``{"ok": bool, "error"?: str}``), if any."""
    checks = body.get("checks")
    broker = checks.get("broker") if isinstance(checks, dict) else None
    if not isinstance(broker, dict) or not isinstance(broker.get("ok"), bool):
        return None
    state: dict[str, Any] = {"connected": broker["ok"]}
    if isinstance(broker.get("error"), str):
        state["error"] = broker["error"]
    return state
