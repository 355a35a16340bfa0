"""Session fixtures of the deployment tests: a running Docker engine and the images built once.

Without root or apt-get the tests skip with a line saying why; under CI=true the same reason
fails them, so a CI run never passes without having built and run the images.
"""

from __future__ import annotations

import os

import pytest

from deploy.tests import engine


def _cannot_run(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true, and the deployment tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A Docker daemon that answers, installed and started when needed."""
    if (reason := engine.why_unavailable()) is not None:
        _cannot_run(reason)
    engine.ensure_engine()


@pytest.fixture(scope="session")
def images(docker_engine: None) -> list[str]:
    """Every service's image (agora/<service>:<version>), built on the local base."""
    return engine.build_images()
