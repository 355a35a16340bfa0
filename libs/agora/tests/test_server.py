"""The HTTP server ``agora serve`` runs: a request whose line or headers pass the bound is refused
with a 431 problem, at once, without the server reading the rest; other requests are served."""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from fastapi import APIRouter, Request

from agora.app import ServiceDefinition, create_service_app
from agora.server import server_config
from agora.settings import ServiceSettings
from agora_tools.testing import free_port, uvicorn_thread

KIB = 1024
MIB = 1024 * KIB


class DemoSettings(ServiceSettings):
    service_name: ClassVar[str] = "demo"
    model_config = ServiceSettings.prefixed("AGORA_DEMO_")


router = APIRouter()


@router.get("/echo")
async def echo(request: Request) -> dict[str, int]:
    return {"header_bytes": sum(len(k) + len(v) for k, v in request.headers.items())}


@dataclass(frozen=True)
class Served:
    """A service app served by uvicorn as ``agora serve`` serves it, in a thread, on a free port."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


Serve = Callable[[], Served]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    with ExitStack() as servers:

        def start() -> Served:
            # The bound comes from the environment, as for a service that `agora serve` runs.
            settings = DemoSettings(data_dir=tmp_path, log_level="warning")
            app = create_service_app(settings, ServiceDefinition("Demo", routers=[router]))
            served = Served(free_port())
            config = server_config(
                app, host="127.0.0.1", port=served.port, max_header_bytes=settings.max_header_bytes
            )
            servers.enter_context(uvicorn_thread(config))
            return served

        yield start


def answer_of(sock: socket.socket) -> bytes:
    """What the server says before it closes the connection (or resets it)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(64 * KIB)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def send(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        return answer_of(sock)


def refused_with_431(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    problem = json.loads(body)
    return (
        lines[0] == b"http/1.1 431 request header fields too large"
        and b"content-type: application/problem+json" in lines
        and b"connection: close" in lines
        and problem["status"] == 431
        and problem["title"] == "Request header fields too large"
    )


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(
            b"GET /echo HTTP/1.1\r\nhost: demo\r\nx-big: " + b"a" * 64 * KIB + b"\r\n\r\n",
            id="a 64 KiB header",
        ),
        pytest.param(
            b"GET /echo HTTP/1.1\r\nhost: d\r\n"
            + b"".join(b"x-h%d: %s\r\n" % (n, b"v" * 100) for n in range(400))
            + b"\r\n",
            id="many small headers past the bound",
        ),
        pytest.param(
            b"GET /echo?q=" + b"a" * 64 * KIB + b" HTTP/1.1\r\nhost: demo\r\n\r\n",
            id="a long request line",
        ),
    ],
)
def test_a_request_head_past_the_bound_is_refused_with_431(serve: Serve, head: bytes) -> None:
    served = serve()

    assert refused_with_431(send(served.port, head))


def test_a_64_mib_header_is_refused_before_it_is_all_sent(serve: Serve) -> None:
    served = serve()
    chunk = b"a" * 64 * KIB
    sent = 0
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nhost: demo\r\nx-big: ")
        while sent < 64 * MIB:
            answered, _, _ = select.select([sock], [], [], 0)
            if answered:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        answer = answer_of(sock)

    assert refused_with_431(answer)
    # The server stopped reading long before the end: the header was never held whole.
    assert sent < 16 * MIB


def test_usual_requests_are_served_one_after_another_on_one_connection(serve: Serve) -> None:
    served = serve()
    # A session cookie and a bearer token, as a browser and the gateway send them.
    headers = {"cookie": "agora_session=" + "s" * 4 * KIB, "authorization": "Bearer " + "t" * 2048}
    with httpx.Client(base_url=served.url, timeout=30) as client:
        answers = [client.get("/echo", headers=headers) for _ in range(3)]

    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert answers[-1].json()["header_bytes"] > 6 * KIB


def test_the_bound_is_the_max_header_bytes_setting(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    header = {"x-big": "a" * 40 * KIB}
    monkeypatch.setenv("AGORA_MAX_HEADER_BYTES", str(64 * KIB))
    roomy = serve()
    monkeypatch.setenv("AGORA_MAX_HEADER_BYTES", str(8 * KIB))
    tight = serve()

    with httpx.Client(timeout=30) as client:
        assert client.get(f"{roomy.url}/echo", headers=header).status_code == 200
        assert client.get(f"{tight.url}/echo", headers={"x-big": "a" * 9 * KIB}).status_code == 431
