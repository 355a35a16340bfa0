"""Credentials that are not users': the operator's token on /internal/*, and each service's own
credential on the calls it makes on nobody's behalf (ADR 24)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import uvicorn
from fastapi import APIRouter, FastAPI, Request

from agora.app import Resources, ServiceDefinition, create_service_app
from agora.auth import OPERATOR_TOKEN_FILE, secrets_dir, service_credential, token_digest
from agora.deps import CallingService, UserOrService
from agora.secrets import secret_file
from agora.settings import ServiceSettings
from agora_tools.testing import bearer, free_port

pytestmark = pytest.mark.timeout(60)

OPERATOR = "the-operators-token"
ORDERS_SECRET = "orders-own-secret"
INTERNAL = ["/internal/spans", "/internal/logs", "/internal/outbox"]


def settings_for(name: str, **values: Any) -> ServiceSettings:
    class Settings(ServiceSettings):
        service_name: ClassVar[str] = name
        model_config = ServiceSettings.prefixed(f"AGORA_{name.upper()}_")

    return Settings(**values)


@contextlib.asynccontextmanager
async def calling(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    resources: Resources = app.state.resources
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield client
    finally:
        await resources.client.close()


def stateless(tmp_path: Path, **values: Any) -> FastAPI:
    settings = settings_for(f"svc{uuid.uuid4().hex[:6]}", data_dir=tmp_path / "data", **values)
    return create_service_app(settings, ServiceDefinition("a service"), use_database=False)


# -- the operator's token on /internal/* ------------------------------------------------------


@pytest.mark.parametrize("path", INTERNAL)
@pytest.mark.parametrize("sent", [{}, bearer("a-guess"), bearer(OPERATOR + "x")])
async def test_internal_routes_refuse_a_caller_without_the_operators_token_even_from_loopback(
    tmp_path: Path, path: str, sent: dict[str, str]
) -> None:
    app = stateless(tmp_path, operator_token=OPERATOR)
    async with calling(app) as client:
        answer = await client.get(path, headers={**sent, "x-forwarded-for": "127.0.0.1"})

    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert answer.json()["title"] == "Authentication required"
    assert "spans" not in answer.json()
    assert "logs" not in answer.json()


@pytest.mark.parametrize("path", INTERNAL)
async def test_the_operators_token_opens_the_internal_routes(tmp_path: Path, path: str) -> None:
    app = stateless(tmp_path, operator_token=OPERATOR)
    async with calling(app) as client:
        answer = await client.get(path, headers=bearer(OPERATOR))

    assert answer.status_code == 200
    assert answer.json()["replica"] == 0


async def test_in_production_without_an_operator_token_internal_is_closed_to_everyone(
    tmp_path: Path,
) -> None:
    # An embedded system's token file beside the data does not count in production.
    secret_file(secrets_dir(tmp_path / "data") / OPERATOR_TOKEN_FILE)
    app = stateless(tmp_path, profile="production")
    async with calling(app) as client:
        for token in ("", "anything", OPERATOR):
            answer = await client.get("/internal/spans", headers=bearer(token) if token else {})
            assert answer.status_code == 401
            assert "no operator credential is configured" in answer.json()["detail"]


async def test_embedded_a_service_reads_the_operator_token_agora_up_wrote(tmp_path: Path) -> None:
    written = secret_file(secrets_dir(tmp_path / "data") / OPERATOR_TOKEN_FILE)
    app = stateless(tmp_path)
    async with calling(app) as client:
        assert (await client.get("/internal/logs", headers=bearer(written))).status_code == 200
        assert (await client.get("/internal/logs", headers=bearer(OPERATOR))).status_code == 401


async def test_the_operator_token_file_named_in_the_environment_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "elsewhere" / "operator.token"
    written = secret_file(path)
    monkeypatch.setenv("AGORA_OPERATOR_TOKEN_FILE", str(path))
    app = stateless(tmp_path)
    async with calling(app) as client:
        assert (await client.get("/internal/outbox", headers=bearer(written))).status_code == 200


async def test_metrics_stay_open_on_a_services_own_port_for_prometheus(tmp_path: Path) -> None:
    app = stateless(tmp_path, operator_token=OPERATOR)
    async with calling(app) as client:
        answer = await client.get("/metrics")

    assert answer.status_code == 200
    assert "agora_service_info" in answer.text


async def test_private_metrics_need_the_operators_token(tmp_path: Path) -> None:
    settings = settings_for("edge", data_dir=tmp_path, operator_token=OPERATOR)
    app = create_service_app(
        settings, ServiceDefinition("edge"), use_database=False, private_metrics=True
    )
    async with calling(app) as client:
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers=bearer(OPERATOR))).status_code == 200


# -- services' own credentials --------------------------------------------------------------


def prices() -> APIRouter:
    """A route meant for services: the caller's name, as its credential proved it."""
    router = APIRouter()

    @router.get("/prices")
    async def read_prices(caller: CallingService) -> dict[str, str]:
        return {"caller": caller.name}

    @router.get("/stock")
    async def read_stock(caller: UserOrService) -> dict[str, str]:
        return {"caller": getattr(caller, "name", "a user")}

    return router


def callee(tmp_path: Path) -> FastAPI:
    settings = settings_for(
        "catalogue",
        data_dir=tmp_path,
        # Orders may call it so; the gateway's secret is known too, but not passed here.
        service_callers={"orders": token_digest(ORDERS_SECRET), "gateway": token_digest("gw")},
    )
    return create_service_app(
        settings, ServiceDefinition("catalogue", routers=[prices()]), use_database=False
    )


@pytest.mark.parametrize(
    "sent",
    [
        {},
        bearer("eyJhbGciOiJFZERTQSJ9.e30.c2ln"),
        bearer(OPERATOR),
        bearer(service_credential("orders", "a-guessed-secret")),
        bearer(service_credential("payments", ORDERS_SECRET)),
        bearer(service_credential("orders", "")),
        bearer("agora-service.orders"),
    ],
    ids=["none", "a-jwt", "operator", "wrong-secret", "unknown-service", "empty", "malformed"],
)
async def test_a_route_for_services_refuses_a_call_without_a_known_services_credential(
    tmp_path: Path, sent: dict[str, str]
) -> None:
    async with calling(callee(tmp_path)) as client:
        answer = await client.get("/prices", headers=sent)

    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert "calling service's own credential" in answer.json()["detail"]


async def test_a_route_for_services_names_the_service_whose_credential_came(
    tmp_path: Path,
) -> None:
    async with calling(callee(tmp_path)) as client:
        answer = await client.get(
            "/prices", headers=bearer(service_credential("orders", ORDERS_SECRET))
        )

    assert answer.status_code == 200
    assert answer.json() == {"caller": "orders"}


async def test_a_route_for_users_or_services_lets_a_known_service_in_and_no_one_unnamed(
    tmp_path: Path,
) -> None:
    async with calling(callee(tmp_path)) as client:
        anonymous = await client.get("/stock")
        guessed = await client.get(
            "/stock", headers=bearer(service_credential("orders", "a-guessed-secret"))
        )
        known = await client.get(
            "/stock", headers=bearer(service_credential("orders", ORDERS_SECRET))
        )

    assert anonymous.status_code == 401
    assert guessed.status_code == 401
    assert known.json() == {"caller": "orders"}


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            # uvicorn says it has started through this flag alone.
            while not server.started:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def caller(tmp_path: Path, url: str, **values: Any) -> FastAPI:
    """Orders, with its own credential, calling the catalogue inside a request of its own."""
    settings = settings_for(
        "orders", data_dir=tmp_path, service_urls={"catalogue": [url]}, **values
    )
    router = APIRouter()

    @router.get("/relay")
    async def relay(request: Request) -> dict[str, Any]:
        resources: Resources = request.app.state.resources
        reply = await resources.client.request("catalogue", "GET", "/prices")
        return {"status": reply.status}

    return create_service_app(
        settings, ServiceDefinition("orders", routers=[router]), use_database=False
    )


async def test_a_call_a_service_makes_on_nobodys_behalf_carries_its_own_credential(
    tmp_path: Path,
) -> None:
    async with serving(callee(tmp_path / "callee")) as url:
        app = caller(tmp_path / "caller", url, service_token=ORDERS_SECRET)
        resources: Resources = app.state.resources
        try:
            # Outside any request, as a background loop or a consumer calls.
            reply = await resources.client.request("catalogue", "GET", "/prices")
        finally:
            await resources.client.close()

    assert reply.status == 200
    assert reply.json() == {"caller": "orders"}


@pytest.mark.parametrize(
    "sent",
    [{}, bearer(service_credential("gateway", "gw"))],
    ids=["anonymous", "another-services-credential"],
)
async def test_a_service_lends_its_credential_to_no_caller_and_passes_on_none(
    tmp_path: Path, sent: dict[str, str]
) -> None:
    async with serving(callee(tmp_path / "callee")) as url:
        app = caller(tmp_path / "caller", url, service_token=ORDERS_SECRET)
        async with calling(app) as client:
            answer = await client.get("/relay", headers=sent)

    # Inside a request the call is that caller's: neither orders' credential nor the
    # gateway's (which the catalogue would let in) goes with it.
    assert answer.json() == {"status": 401}
