"""Generated requests, well-formed and malformed, against both mailbox routes on both stores: none
may get a server error, and every answer, refusals included (problem details), must be the one
the OpenAPI document describes."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from agora.migrations import upgrade
from agora_tools.testing import PROBLEM, an_order
from notifications.bootstrap import MIGRATIONS

from .conftest import KEY, Bench, a_user, act, app_for, settings_for

Case = schemathesis.Case[Any]
CHECKS: list[schemathesis.CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# A fixed seed and no example database: every run sends the same requests.
CONFIG = {
    "seed": 20261124,
    "generation": {"mode": "all", "max-examples": 40, "deterministic": True, "database": "none"},
}
# Building the app makes its (empty) database file: keep it out of the working tree.
_NOWHERE = Path(tempfile.mkdtemp(prefix="agora-notifications-document-"))
DOCUMENT = schemathesis.openapi.from_dict(
    app_for(settings_for(f"sqlite:///{_NOWHERE / 'never-opened.db'}", _NOWHERE)).openapi(),
    config=schemathesis.Config.from_dict(CONFIG),
)


@pytest.fixture(scope="module")
def app(module_database_url: str, module_data_dir: Path) -> FastAPI:
    """The service over a database with a few messages in it; schemathesis starts and stops it
    around each test."""
    upgrade(module_database_url, MIGRATIONS)
    ada = a_user()

    async def events(bench: Bench) -> None:
        await bench.register(ada)
        await bench.confirm(an_order(), ada)
        await bench.cancel(an_order(), ada, reason="something_new")

    act(module_database_url, events)
    app: FastAPI = app_for(settings_for(module_database_url, module_data_dir))
    return app


@pytest.fixture(scope="module")
def admin() -> dict[str, str]:
    # Outlives the module: an expired token would turn every answer into a 401.
    return KEY.bearer(["customer", "admin"], exp=int(time.time()) + 3600)


@DOCUMENT.parametrize()
def test_no_request_gets_a_server_error_or_an_undocumented_answer(
    case: Case, app: FastAPI, admin: dict[str, str]
) -> None:
    response = case.call(app=app, headers=admin)

    case.validate_response(response, checks=CHECKS, headers=admin)
    if response.status_code >= 400:
        assert response.headers["content-type"] == [PROBLEM], case.as_curl_command()
        assert response.json()["status"] == response.status_code, case.as_curl_command()
