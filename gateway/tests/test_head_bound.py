"""The gateway and a service as `agora serve` runs them: a request whose line and headers pass
AGORA_MAX_HEADER_BYTES is refused with a 431 problem at the door; the rest are served (ADR 23)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from agora_tools.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
AGORA = Path(sys.executable).with_name("agora")

pytestmark = pytest.mark.timeout(120)

Serve = Callable[[str, int], str]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """Start ``agora serve NAME`` with a head bound; its URL once it answers /livez."""
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str, max_header_bytes: int) -> str:
        port = free_port()
        env = {
            **os.environ,
            "AGORA_DATA_DIR": str(tmp_path / name / "data"),
            "AGORA_MAX_HEADER_BYTES": str(max_header_bytes),
            "AGORA_LOG_LEVEL": "warning",
        }
        with (tmp_path / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                [str(AGORA), "serve", name, "--port", str(port)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / f"{name}.log").read_text()
            try:
                if httpx.get(f"{url}/livez", timeout=5).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"agora serve {name} did not answer /livez")

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize("name", ["gateway", "catalog"])
def test_a_request_with_headers_past_the_bound_is_refused_with_431_at_the_door(
    serve: Serve, name: str
) -> None:
    url = serve(name, 4096)

    with httpx.Client(base_url=url, timeout=30) as client:
        refused = client.get("/livez", headers={"x-big": "a" * 5000})
        served = client.get("/livez", headers={"x-fits": "a" * 2000})

    assert refused.status_code == 431
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["title"] == "Request header fields too large"
    assert served.status_code == 200
