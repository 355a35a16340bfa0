"""Session fixtures of the deployment tests: a running Docker engine and the images built once.

Without root or apt-get the tests skip with a line saying why; under CI=true the same reason
fails them, so a CI run never passes without having built and run the images.
"""

from __future__ import annotations

import pytest

from agora_tools.testing import skip_or_fail
from deploy.tests import engine


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A Docker daemon that answers, installed and started when needed."""
    if (reason := engine.why_unavailable()) is not None:
        skip_or_fail(reason)
    engine.ensure_engine()


@pytest.fixture(scope="session")
def images(docker_engine: None) -> list[str]:
    """Every service's image (agora/<service>:<version>), built on the local base."""
    return engine.build_images()
