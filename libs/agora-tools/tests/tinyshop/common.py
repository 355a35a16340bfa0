"""What the tiny services share: a settings class per name, an app, and a migration that leaves
a mark for each time it runs."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from fastapi import APIRouter, FastAPI, Request

from agora.app import ServiceDefinition, create_service_app
from agora.settings import ServiceSettings


def settings_for(name: str) -> ServiceSettings:
    class TinySettings(ServiceSettings):
        service_name: ClassVar[str] = name
        model_config = ServiceSettings.prefixed(f"AGORA_{name.upper()}_")

    return TinySettings()


def build(name: str) -> FastAPI:
    settings = settings_for(name)
    router = APIRouter()

    @router.get("/whoami")
    async def whoami(request: Request) -> dict[str, Any]:
        return {
            "service": name,
            # `in-process` when the caller runs in this process (a group's, ADR 53).
            "host": request.headers.get("host"),
            "replica": settings.replica,
            "port": settings.port,
            "peers": settings.service_urls,
            # Who may call it with their own credential (agora up says so, by digest).
            "callers": sorted(settings.service_callers),
        }

    @router.get("/peer/{peer}")
    async def peer(peer: str, request: Request) -> Any:
        """Another service's whoami, through the service client: a 503 problem while it is
        away."""
        return await request.app.state.resources.client.get_json(peer, "/whoami")

    # No database: the tiny services keep nothing (and so have no outbox for a relay to read).
    return create_service_app(
        settings, ServiceDefinition(f"tiny {name}", routers=[router]), use_database=False
    )


def record_migration(name: str) -> None:
    settings = settings_for(name)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with (settings.data_dir / f"{name}.migrations").open("a") as marks:
        marks.write(f"{os.getpid()}\n")
