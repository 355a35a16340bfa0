"""The app factory: probes, metrics, request ids, and problem details for every kind of error."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import ClassVar

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict

from agora.app import ServiceDefinition, create_service_app
from agora.settings import ServiceSettings


class DemoSettings(ServiceSettings):
    service_name: ClassVar[str] = "demo"
    model_config = ServiceSettings.prefixed("AGORA_DEMO_")


class NoteNotFound(Exception):
    """Note not found."""


class NoteLocked(Exception):
    """Note locked."""

    def __init__(self, retry_after: timedelta) -> None:
        super().__init__("someone else is editing it")
        self.retry_after = retry_after


class NoteHidden(Exception):
    """Sign in to read this note."""


class NewNote(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    text: str
    stars: int


router = APIRouter()


@router.post("/notes", status_code=201)
async def create_note(note: NewNote) -> NewNote:
    return note


@router.get("/notes/{note_id}")
async def get_note(note_id: int) -> NewNote:
    raise NoteNotFound(f"there is no note {note_id}")


@router.put("/notes/{note_id}")
async def edit_note(note_id: int) -> NewNote:
    raise NoteLocked(timedelta(seconds=2.2))


@router.get("/secret")
async def secret() -> None:
    raise NoteHidden


@router.get("/crash")
async def crash() -> None:
    raise RuntimeError("a bug")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = DemoSettings(data_dir=tmp_path, max_body_bytes=1024)
    app = create_service_app(
        settings,
        ServiceDefinition(
            "Demo", routers=[router], errors={NoteNotFound: 404, NoteLocked: 429, NoteHidden: 401}
        ),
    )
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_probes_answer(client: TestClient) -> None:
    assert client.get("/livez").json() == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": {"ok": True}}


def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    client.get("/notes/7")
    client.get("/notes/8")

    metrics = client.get("/metrics").text
    labels = 'method="GET",route="/notes/{note_id}",service="demo",status="404"'
    assert f"agora_http_requests_total{{{labels}}} 2.0" in metrics
    assert "agora_http_request_duration_seconds_bucket" in metrics


def test_metrics_show_the_services_own_series_where_a_process_holds_several(
    client: TestClient, tmp_path: Path
) -> None:
    class OtherSettings(ServiceSettings):
        service_name: ClassVar[str] = "other"
        model_config = ServiceSettings.prefixed("AGORA_OTHER_")

    other = create_service_app(
        OtherSettings(data_dir=tmp_path / "other"), ServiceDefinition("Other", routers=[router])
    )
    with TestClient(other, raise_server_exceptions=False) as other_client:
        other_client.get("/notes/9")
        client.get("/notes/7")

        mine, theirs = client.get("/metrics").text, other_client.get("/metrics").text

    assert 'route="/notes/{note_id}",service="demo"' in mine
    assert 'service="other"' not in mine
    assert 'route="/notes/{note_id}",service="other"' in theirs
    assert 'service="demo"' not in theirs
    # What belongs to the process, not to one service of it, shows on both.
    assert "process_cpu_seconds_total" in mine
    assert "process_cpu_seconds_total" in theirs


def test_every_answer_carries_a_request_id_and_keeps_the_callers(client: TestClient) -> None:
    assert len(client.get("/livez").headers["x-request-id"]) == 32
    assert (
        client.get("/livez", headers={"x-request-id": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )


def test_a_domain_error_is_a_problem_with_its_mapped_status(client: TestClient) -> None:
    answer = client.get("/notes/5")

    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["title"] == "Note not found"
    assert body["detail"] == "there is no note 5"
    assert body["type"] == "/problems/note-not-found"
    assert body["request_id"] == answer.headers["x-request-id"]


def test_a_domain_error_that_knows_when_to_return_says_so_in_retry_after(
    client: TestClient,
) -> None:
    answer = client.put("/notes/5")

    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "3"
    assert answer.json()["title"] == "Note locked"


def test_a_domain_error_mapped_to_401_names_the_auth_scheme(client: TestClient) -> None:
    answer = client.get("/secret")

    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == 'Bearer realm="agora"'


def test_malformed_json_is_a_400_problem(client: TestClient) -> None:
    answer = client.post(
        "/notes", content=b'{"text": ', headers={"content-type": "application/json"}
    )

    assert answer.status_code == 400
    assert answer.json()["title"] == "Malformed JSON"


@pytest.mark.parametrize(
    "body",
    [
        {"text": "hi"},  # a missing field
        {"text": "hi", "stars": "5"},  # a wrong type, even one that could be coerced
        {"text": "hi", "stars": 5, "author": "me"},  # an unknown field
    ],
)
def test_invalid_writes_are_422_problems(client: TestClient, body: dict[str, object]) -> None:
    answer = client.post("/notes", json=body)

    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["errors"]


def test_a_body_over_the_cap_is_a_413_problem(client: TestClient) -> None:
    answer = client.post("/notes", json={"text": "x" * 2000, "stars": 1})

    assert answer.status_code == 413
    assert answer.json()["status"] == 413


def test_a_chunked_body_over_the_cap_is_a_413_problem(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"text": "'
        for _ in range(10):
            yield b"x" * 200
        yield b'", "stars": 1}'

    answer = client.post("/notes", content=chunks(), headers={"content-type": "application/json"})

    assert answer.status_code == 413


def test_an_unknown_route_is_a_404_problem(client: TestClient) -> None:
    answer = client.get("/nowhere")

    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"


def test_a_bug_is_a_500_problem_without_its_details(client: TestClient) -> None:
    answer = client.get("/crash")

    assert answer.status_code == 500
    assert "a bug" not in answer.text
    assert answer.json()["title"] == "Internal error"


def test_readiness_fails_when_a_check_fails(tmp_path: Path) -> None:
    async def broker_down() -> None:
        raise ConnectionError("broker unreachable")

    app = create_service_app(
        DemoSettings(data_dir=tmp_path),
        ServiceDefinition("Demo"),
        readiness={"broker": broker_down},
    )
    with TestClient(app) as test_client:
        answer = test_client.get("/readyz")

    assert answer.status_code == 503
    assert answer.json()["checks"]["broker"] == {"ok": False, "error": "broker unreachable"}
